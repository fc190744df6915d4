//! Accounts: the user record and the email index, kept in step in one
//! transaction.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Result, Store, encode, get_record,
    tables::{EMAIL_TO_USER, USER_TO_RECORD},
};
use crate::domain::{Email, Role, UserId};
use crate::store::SessionRecord;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRecord {
    pub id: u128,
    pub email: String,
    /// Argon2id PHC string; the only form in which a password is kept.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
}

impl UserRecord {
    pub fn user_id(&self) -> UserId {
        UserId::from_u128(self.id)
    }
}

/// Schema 1 → 2: emails were only lower-cased; re-key them to the NFKC +
/// case-folded form [`Email`] now gives, so accounts stay reachable. Two
/// accounts whose emails now fold to one keep their old keys (they cannot
/// be merged); each is logged. Returns how many were re-keyed.
pub(super) fn renormalise_emails(txn: &redb::WriteTransaction) -> Result<usize> {
    let mut emails = txn.open_table(EMAIL_TO_USER)?;
    let mut users = txn.open_table(USER_TO_RECORD)?;
    let mut changes = Vec::new();
    for entry in emails.iter()? {
        let (key, id) = entry?;
        let old = key.value().to_owned();
        if let Ok(new) = Email::parse(&old)
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
        let current: Option<UserRecord> = get_record(&users, "users", id)?;
        if let Some(mut user) = current {
            new.as_str().clone_into(&mut user.email);
            let bytes = encode("users", &user)?;
            users.insert(id, bytes.as_slice())?;
        }
        rekeyed += 1;
    }
    Ok(rekeyed)
}

impl Store {
    /// Creates an account and its first session atomically. Returns `false`
    /// (and writes nothing) when the email is taken.
    pub fn create_user_with_session(
        &self,
        user: &UserRecord,
        session: Option<&SessionRecord>,
        seen: &[super::known::KnownClient],
    ) -> Result<bool> {
        let txn = self.db.begin_write()?;
        {
            let mut emails = txn.open_table(EMAIL_TO_USER)?;
            if emails.get(user.email.as_str())?.is_some() {
                return Ok(false);
            }
            emails.insert(user.email.as_str(), user.id)?;
            let bytes = encode("users", user)?;
            txn.open_table(USER_TO_RECORD)?
                .insert(user.id, bytes.as_slice())?;
            if let Some(session) = session {
                super::sessions::insert_session(&txn, session)?;
            }
            super::known::remember(&txn, user.id, seen)?;
        }
        txn.commit()?;
        Ok(true)
    }

    pub fn user(&self, id: UserId) -> Result<Option<UserRecord>> {
        let txn = self.db.begin_read()?;
        let users = txn.open_table(USER_TO_RECORD)?;
        get_record(&users, "users", id.as_u128())
    }

    pub fn user_by_email(&self, email: &Email) -> Result<Option<UserRecord>> {
        let txn = self.db.begin_read()?;
        let emails = txn.open_table(EMAIL_TO_USER)?;
        let Some(id) = emails.get(email.as_str())?.map(|g| g.value()) else {
            return Ok(None);
        };
        let users = txn.open_table(USER_TO_RECORD)?;
        get_record(&users, "users", id)
    }

    /// Replaces a user's password hash (rehash after a parameter change).
    pub fn set_password_hash(&self, id: UserId, hash: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let found = {
            let mut users = txn.open_table(USER_TO_RECORD)?;
            let current: Option<UserRecord> = get_record(&users, "users", id.as_u128())?;
            match current {
                Some(mut user) => {
                    hash.clone_into(&mut user.password_hash);
                    let bytes = encode("users", &user)?;
                    users.insert(id.as_u128(), bytes.as_slice())?;
                    true
                }
                None => false,
            }
        };
        txn.commit()?;
        Ok(found)
    }

    pub fn count_users(&self) -> Result<u64> {
        use redb::ReadableTableMetadata;
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(USER_TO_RECORD)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str) -> UserRecord {
        UserRecord {
            id: UserId::generate().as_u128(),
            email: email.into(),
            password_hash: "$argon2id$stub".into(),
            role: Role::User,
            disabled: false,
            created_at: OffsetDateTime::now_utc(),
        }
    }

    #[test]
    fn an_email_has_one_account() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        assert!(
            store
                .create_user_with_session(&user("a@x.io"), None, &[])
                .unwrap()
        );
        assert!(
            !store
                .create_user_with_session(&user("a@x.io"), None, &[])
                .unwrap()
        );
        assert_eq!(store.count_users().unwrap(), 1, "the second insert wrote nothing");
        let found = store.user_by_email(&Email::parse("A@x.io").unwrap()).unwrap();
        assert_eq!(found.unwrap().email, "a@x.io");
    }
}
