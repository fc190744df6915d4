//! Accounts: the user row and the email index, kept in step in one
//! transaction. The index is keyed by the email's blind index (see
//! [`crate::seal`]), the row holds it sealed.

use redb::{ReadTransaction, ReadableTable, TableHandle, WriteTransaction};

use super::get_row;
use super::rows::{UserRow, UserRowV3, encode, user_row};
use super::tables::{EMAIL_TO_USER, USER_TO_RECORD};
use crate::domain::UserId;
use crate::seal::Sealer;
use crate::storage::{Result, UserRecord};

/// Inserts the account unless its email is taken (`false`, nothing written).
pub fn create(txn: &WriteTransaction, user: &UserRecord, sealer: &Sealer) -> Result<bool> {
    let mut emails = txn.open_table(EMAIL_TO_USER)?;
    let blind = sealer.email_index(&user.email);
    if emails.get(blind.as_str())?.is_some() {
        return Ok(false);
    }
    emails.insert(blind.as_str(), user.id.as_u128())?;
    let bytes = encode(&USER_TO_RECORD, &UserRow::seal(user, sealer)?)?;
    txn.open_table(USER_TO_RECORD)?
        .insert(user.id.as_u128(), bytes.as_slice())?;
    Ok(true)
}

pub fn get(txn: &ReadTransaction, id: UserId, sealer: &Sealer) -> Result<Option<UserRecord>> {
    let users = txn.open_table(USER_TO_RECORD)?;
    user_row(&users, id.as_u128())?
        .map(|row| row.open(sealer))
        .transpose()
}

pub fn by_email(txn: &ReadTransaction, email: &str, sealer: &Sealer) -> Result<Option<UserRecord>> {
    let emails = txn.open_table(EMAIL_TO_USER)?;
    let Some(id) = emails.get(sealer.email_index(email).as_str())?.map(|g| g.value()) else {
        return Ok(None);
    };
    let user = get(txn, UserId::from_u128(id), sealer)?;
    // The index entry must name the account whose sealed email this is: a
    // swapped entry is damage, not another account to log in to.
    if user.as_ref().is_some_and(|u| u.email != email) {
        return Err(crate::storage::StorageError::Corrupt {
            table: EMAIL_TO_USER.name().to_owned(),
            detail: "an index entry names another account".to_owned(),
        });
    }
    Ok(user)
}

/// Whether the account exists, is enabled and has the password hash
/// `verified`.
pub fn still_as_verified(
    txn: &WriteTransaction,
    id: UserId,
    verified: &str,
    sealer: &Sealer,
) -> Result<bool> {
    let users = txn.open_table(USER_TO_RECORD)?;
    let Some(row) = user_row(&users, id.as_u128())? else {
        return Ok(false);
    };
    Ok(!row.disabled && row.secrets(sealer)?.password_hash == verified)
}

/// Replaces a user's password hash; `false` if there is no such user.
pub fn set_password_hash(txn: &WriteTransaction, id: UserId, hash: &str, sealer: &Sealer) -> Result<bool> {
    let mut users = txn.open_table(USER_TO_RECORD)?;
    let Some(mut user) = user_row(&users, id.as_u128())? else {
        return Ok(false);
    };
    user.set_password_hash(sealer, hash)?;
    let bytes = encode(&USER_TO_RECORD, &user)?;
    users.insert(id.as_u128(), bytes.as_slice())?;
    Ok(true)
}

/// Replaces the hash only if it is still `expected`.
pub fn replace_password_hash(
    txn: &WriteTransaction,
    id: UserId,
    expected: &str,
    hash: &str,
    sealer: &Sealer,
) -> Result<bool> {
    let users = txn.open_table(USER_TO_RECORD)?;
    let current = user_row(&users, id.as_u128())?;
    drop(users);
    let Some(current) = current else {
        return Ok(false);
    };
    if current.secrets(sealer)?.password_hash != expected {
        return Ok(false);
    }
    set_password_hash(txn, id, hash, sealer)
}

/// Schema 1 → 2: emails were only lower-cased; re-key them to the NFKC +
/// case-folded form [`crate::domain::Email`] now gives, so accounts stay
/// reachable. Two accounts whose emails now fold to one keep their old
/// keys (they cannot be merged); each is logged. Returns how many were
/// re-keyed.
pub fn renormalise_emails(txn: &WriteTransaction) -> Result<usize> {
    let mut emails = txn.open_table(EMAIL_TO_USER)?;
    let mut users = txn.open_table(USER_TO_RECORD)?;
    let mut changes = Vec::new();
    for entry in emails.iter()? {
        let (key, id) = entry?;
        let old = key.value().to_owned();
        if let Ok(new) = crate::domain::Email::parse(&old)
            && new.as_str() != old
        {
            changes.push((old, new, id.value()));
        }
    }
    let mut rekeyed = 0;
    for (old, new, id) in changes {
        if emails.get(new.as_str())?.is_some() {
            tracing::warn!(user_id = %UserId::from_u128(id), "an account's email now reads as another account's; left as it was");
            continue;
        }
        emails.remove(old.as_str())?;
        emails.insert(new.as_str(), id)?;
        let current: Option<UserRowV3> = get_row(&users, id)?;
        if let Some(mut user) = current {
            new.as_str().clone_into(&mut user.email);
            let bytes = encode(&USER_TO_RECORD, &user)?;
            users.insert(id, bytes.as_slice())?;
        }
        rekeyed += 1;
    }
    Ok(rekeyed)
}
