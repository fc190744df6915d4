//! What admins (and owners, for a deletion) do to whole accounts: role,
//! status, password reset, deletion; the index of admins that guards the
//! last one; the listing by email; invites.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};
use time::OffsetDateTime;

use super::get_row;
use super::rows::{InviteRow, UserRow, UserRowV3, encode, user_row};
use super::sessions;
use super::tables::{
    ADMIN_TO_UNIT, EMAIL_TO_BACKOFF, EMAIL_TO_USER, INVITE_TO_RECORD, OWNER_NOTE_TO_RECORD,
    OWNER_TAG_NOTE_TO_UNIT, OWNER_TO_USAGE, USER_TO_KNOWN_CLIENTS, USER_TO_MFA, USER_TO_RECORD,
};
use crate::domain::{InviteId, Role, SessionId, UserId};
use crate::seal::Sealer;
use crate::storage::{AccountChange, InviteClaim, InviteRecord, Result, UserRecord};

fn load(txn: &WriteTransaction, user: UserId) -> Result<Option<UserRow>> {
    let users = txn.open_table(USER_TO_RECORD)?;
    user_row(&users, user.as_u128())
}

fn store(txn: &WriteTransaction, row: &UserRow) -> Result<()> {
    let bytes = encode(&USER_TO_RECORD, row)?;
    txn.open_table(USER_TO_RECORD)?.insert(row.id, bytes.as_slice())?;
    let mut admins = txn.open_table(ADMIN_TO_UNIT)?;
    if row.role == Role::Admin {
        admins.insert(row.id, ())?;
    } else {
        admins.remove(row.id)?;
    }
    Ok(())
}

/// Whether `row` is the only enabled admin.
fn is_last_admin(txn: &WriteTransaction, row: &UserRow) -> Result<bool> {
    if row.role != Role::Admin || row.disabled {
        return Ok(false);
    }
    let admins = txn.open_table(ADMIN_TO_UNIT)?;
    let users = txn.open_table(USER_TO_RECORD)?;
    for entry in admins.iter()? {
        let id = entry?.0.value();
        if id == row.id {
            continue;
        }
        let other = user_row(&users, id)?;
        if other.is_some_and(|o| o.role == Role::Admin && !o.disabled) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Adds an account to the admin index when it is one (at creation).
pub fn index_if_admin(txn: &WriteTransaction, user: &UserRecord) -> Result<()> {
    if user.role == Role::Admin {
        txn.open_table(ADMIN_TO_UNIT)?.insert(user.id.as_u128(), ())?;
    }
    Ok(())
}

/// Schema 2 → 3: indexes the accounts that are admins.
pub fn index_admins(txn: &WriteTransaction) -> Result<usize> {
    let users = txn.open_table(USER_TO_RECORD)?;
    let mut admins = txn.open_table(ADMIN_TO_UNIT)?;
    let mut found = 0;
    for entry in users.iter()? {
        let (_, value) = entry?;
        let row: UserRowV3 = super::rows::decode(&USER_TO_RECORD, value.value())?;
        if row.role == Role::Admin {
            admins.insert(row.id, ())?;
            found += 1;
        }
    }
    Ok(found)
}

pub fn delete(
    txn: &WriteTransaction,
    user: UserId,
    verified: Option<&str>,
    at: OffsetDateTime,
    sealer: &Sealer,
) -> Result<AccountChange<Vec<SessionId>>> {
    let Some(row) = load(txn, user)? else {
        return Ok(AccountChange::NotFound);
    };
    let secrets = row.secrets(sealer)?;
    if verified.is_some_and(|hash| hash != secrets.password_hash) {
        return Ok(AccountChange::Stale);
    }
    if is_last_admin(txn, &row)? {
        return Ok(AccountChange::LastAdmin);
    }
    let id = row.id;
    txn.open_table(USER_TO_RECORD)?.remove(id)?;
    txn.open_table(ADMIN_TO_UNIT)?.remove(id)?;
    let email = sealer.email_index(&secrets.email);
    txn.open_table(EMAIL_TO_USER)?.remove(email.as_str())?;
    txn.open_table(USER_TO_KNOWN_CLIENTS)?.remove(id)?;
    txn.open_table(USER_TO_MFA)?.remove(id)?;
    txn.open_table(OWNER_TO_USAGE)?.remove(id)?;
    txn.open_table(OWNER_NOTE_TO_RECORD)?
        .retain_in((id, 0)..=(id, u128::MAX), |_, _| false)?;
    // Tags are indexed by hexadecimal blind indexes: every one sorts
    // below `~`.
    txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?
        .retain_in((id, "", 0)..=(id, "~", u128::MAX), |_, ()| false)?;
    // The account's counters: keyed by the email's blind index alone, or
    // followed by a newline and more (see `backoff::stored_key`).
    let below_newline = format!("{email}\u{b}");
    txn.open_table(EMAIL_TO_BACKOFF)?
        .retain_in(email.as_str()..below_newline.as_str(), |_, _| false)?;
    let ended = sessions::end_all(txn, user, at)?;
    Ok(AccountChange::Done(ended))
}

pub fn set_role(
    txn: &WriteTransaction,
    user: UserId,
    role: Role,
    sealer: &Sealer,
) -> Result<AccountChange<UserRecord>> {
    let Some(mut row) = load(txn, user)? else {
        return Ok(AccountChange::NotFound);
    };
    if role != Role::Admin && is_last_admin(txn, &row)? {
        return Ok(AccountChange::LastAdmin);
    }
    row.role = role;
    store(txn, &row)?;
    Ok(AccountChange::Done(row.open(sealer)?))
}

pub fn set_disabled(
    txn: &WriteTransaction,
    user: UserId,
    disabled: bool,
    at: OffsetDateTime,
) -> Result<AccountChange<Vec<SessionId>>> {
    let Some(mut row) = load(txn, user)? else {
        return Ok(AccountChange::NotFound);
    };
    if disabled && is_last_admin(txn, &row)? {
        return Ok(AccountChange::LastAdmin);
    }
    row.disabled = disabled;
    store(txn, &row)?;
    let ended = if disabled {
        sessions::end_all(txn, user, at)?
    } else {
        Vec::new()
    };
    Ok(AccountChange::Done(ended))
}

pub fn reset_password(
    txn: &WriteTransaction,
    user: UserId,
    hash: &str,
    at: OffsetDateTime,
    sealer: &Sealer,
) -> Result<AccountChange<Vec<SessionId>>> {
    let Some(mut row) = load(txn, user)? else {
        return Ok(AccountChange::NotFound);
    };
    row.set_password_hash(sealer, hash)?;
    store(txn, &row)?;
    Ok(AccountChange::Done(sessions::end_all(txn, user, at)?))
}

pub fn end_sessions(
    txn: &WriteTransaction,
    user: UserId,
    at: OffsetDateTime,
) -> Result<AccountChange<Vec<SessionId>>> {
    if load(txn, user)?.is_none() {
        return Ok(AccountChange::NotFound);
    }
    Ok(AccountChange::Done(sessions::end_all(txn, user, at)?))
}

/// Accounts whose email starts with `prefix`, in email order, after the
/// email `after`. Emails are sealed, so this opens every account's and
/// sorts the matches: an administrator's listing, run on a scanning
/// thread.
pub fn page(
    txn: &ReadTransaction,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
    sealer: &Sealer,
) -> Result<(Vec<UserRecord>, Option<String>)> {
    let users = txn.open_table(USER_TO_RECORD)?;
    let mut found = Vec::new();
    for entry in users.iter()? {
        let (id, _) = entry?;
        let Some(row) = user_row(&users, id.value())? else {
            continue;
        };
        let user = row.open(sealer)?;
        if user.email.starts_with(prefix) && after.is_none_or(|after| user.email.as_str() > after) {
            found.push(user);
        }
    }
    found.sort_unstable_by(|a, b| a.email.cmp(&b.email));
    if found.len() > limit {
        found.truncate(limit);
        let next = found.last().map(|u| u.email.clone());
        return Ok((found, next));
    }
    Ok((found, None))
}

/// The invite `claim` names, if it can be used: the hash matches (compared
/// in constant time), it is unused and unexpired.
fn usable(txn: &WriteTransaction, claim: &InviteClaim) -> Result<Option<InviteRow>> {
    let invites = txn.open_table(INVITE_TO_RECORD)?;
    let Some(row) = get_row::<_, InviteRow>(&invites, claim.id.as_u128())? else {
        return Ok(None);
    };
    let admitted = crate::auth::invites::admits(&InviteRecord::from(row.clone()), claim);
    Ok(admitted.then_some(row))
}

pub fn invite_claimable(txn: &WriteTransaction, claim: &InviteClaim) -> Result<bool> {
    Ok(usable(txn, claim)?.is_some())
}

/// Marks the invite used by `user` if it can be; `false` if not.
pub fn claim_invite(txn: &WriteTransaction, claim: &InviteClaim, user: UserId) -> Result<bool> {
    let Some(mut row) = usable(txn, claim)? else {
        return Ok(false);
    };
    let mut invites = txn.open_table(INVITE_TO_RECORD)?;
    row.used_by = Some(user.as_u128());
    row.used_at = Some(claim.at);
    let bytes = encode(&INVITE_TO_RECORD, &row)?;
    invites.insert(row.id, bytes.as_slice())?;
    Ok(true)
}

pub fn put_invite(txn: &WriteTransaction, invite: &InviteRecord) -> Result<()> {
    let row = InviteRow::from(invite);
    let bytes = encode(&INVITE_TO_RECORD, &row)?;
    txn.open_table(INVITE_TO_RECORD)?
        .insert(row.id, bytes.as_slice())?;
    Ok(())
}

pub fn invites(txn: &ReadTransaction, limit: usize) -> Result<Vec<InviteRecord>> {
    let invites = txn.open_table(INVITE_TO_RECORD)?;
    let mut found = Vec::new();
    for entry in invites.iter()?.rev().take(limit) {
        let (_, value) = entry?;
        let row: InviteRow = super::rows::decode(&INVITE_TO_RECORD, value.value())?;
        found.push(row.into());
    }
    Ok(found)
}

pub fn invite(txn: &ReadTransaction, id: InviteId) -> Result<Option<InviteRecord>> {
    let invites = txn.open_table(INVITE_TO_RECORD)?;
    Ok(get_row::<_, InviteRow>(&invites, id.as_u128())?.map(InviteRecord::from))
}

pub fn delete_invite(txn: &WriteTransaction, id: InviteId) -> Result<bool> {
    Ok(txn.open_table(INVITE_TO_RECORD)?.remove(id.as_u128())?.is_some())
}
