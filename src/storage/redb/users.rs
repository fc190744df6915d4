//! Accounts: the user row and the email index, kept in step in one
//! transaction.

use redb::{ReadTransaction, ReadableTable, WriteTransaction};

use super::get_row;
use super::rows::{UserRow, encode};
use super::tables::{EMAIL_TO_USER, USER_TO_RECORD};
use crate::domain::UserId;
use crate::storage::{Result, UserRecord};

/// Inserts the account unless its email is taken (`false`, nothing written).
pub fn create(txn: &WriteTransaction, user: &UserRecord) -> Result<bool> {
    let mut emails = txn.open_table(EMAIL_TO_USER)?;
    if emails.get(user.email.as_str())?.is_some() {
        return Ok(false);
    }
    emails.insert(user.email.as_str(), user.id.as_u128())?;
    let bytes = encode(&USER_TO_RECORD, &UserRow::from(user))?;
    txn.open_table(USER_TO_RECORD)?
        .insert(user.id.as_u128(), bytes.as_slice())?;
    Ok(true)
}

pub fn get(txn: &ReadTransaction, id: UserId) -> Result<Option<UserRecord>> {
    let users = txn.open_table(USER_TO_RECORD)?;
    Ok(get_row::<_, UserRow>(&users, id.as_u128())?.map(UserRecord::from))
}

pub fn by_email(txn: &ReadTransaction, email: &str) -> Result<Option<UserRecord>> {
    let emails = txn.open_table(EMAIL_TO_USER)?;
    let Some(id) = emails.get(email)?.map(|g| g.value()) else {
        return Ok(None);
    };
    get(txn, UserId::from_u128(id))
}

/// Whether the account exists, is enabled and has the password hash
/// `verified`.
pub fn still_as_verified(txn: &WriteTransaction, id: UserId, verified: &str) -> Result<bool> {
    let users = txn.open_table(USER_TO_RECORD)?;
    let row: Option<UserRow> = get_row(&users, id.as_u128())?;
    Ok(row.is_some_and(|u| !u.disabled && u.password_hash == verified))
}

/// Replaces a user's password hash; `false` if there is no such user.
pub fn set_password_hash(txn: &WriteTransaction, id: UserId, hash: &str) -> Result<bool> {
    let mut users = txn.open_table(USER_TO_RECORD)?;
    let Some(mut user) = get_row::<_, UserRow>(&users, id.as_u128())? else {
        return Ok(false);
    };
    hash.clone_into(&mut user.password_hash);
    let bytes = encode(&USER_TO_RECORD, &user)?;
    users.insert(id.as_u128(), bytes.as_slice())?;
    Ok(true)
}

/// Replaces the hash only if it is still `expected`.
pub fn replace_password_hash(txn: &WriteTransaction, id: UserId, expected: &str, hash: &str) -> Result<bool> {
    let users = txn.open_table(USER_TO_RECORD)?;
    let current: Option<UserRow> = get_row(&users, id.as_u128())?;
    drop(users);
    if current.is_none_or(|user| user.password_hash != expected) {
        return Ok(false);
    }
    set_password_hash(txn, id, hash)
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
        let current: Option<UserRow> = get_row(&users, id)?;
        if let Some(mut user) = current {
            new.as_str().clone_into(&mut user.email);
            let bytes = encode(&USER_TO_RECORD, &user)?;
            users.insert(id, bytes.as_slice())?;
        }
        rekeyed += 1;
    }
    Ok(rekeyed)
}
