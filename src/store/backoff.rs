//! Failed-login counters per email, so an account under a guessing attack
//! backs off whatever the attacker's address, and keeps backing off after a
//! restart. Keyed by the normalised email whether or not an account exists,
//! so a backoff says nothing about existence.

use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Result, Store, decode, encode, get_record, tables::EMAIL_TO_BACKOFF};
use crate::domain::Email;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackoffRecord {
    /// Failures since the last success (or since the count went stale).
    pub failures: u32,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_failure: OffsetDateTime,
    /// No login attempt is examined before this instant.
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub until: OffsetDateTime,
}

impl Store {
    pub fn backoff(&self, email: &Email) -> Result<Option<BackoffRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(EMAIL_TO_BACKOFF)?;
        get_record(&table, "backoff", email.as_str())
    }

    /// Counts one failure, with `next` computing the new record from the
    /// stored one, in one transaction.
    pub fn record_login_failure(
        &self,
        email: &Email,
        next: impl FnOnce(Option<BackoffRecord>) -> BackoffRecord,
    ) -> Result<BackoffRecord> {
        let txn = self.db.begin_write()?;
        let record = {
            let mut table = txn.open_table(EMAIL_TO_BACKOFF)?;
            let record = next(get_record(&table, "backoff", email.as_str())?);
            let bytes = encode("backoff", &record)?;
            table.insert(email.as_str(), bytes.as_slice())?;
            record
        };
        txn.commit()?;
        Ok(record)
    }

    /// Forgets the failures of an email (after a successful login).
    pub fn clear_backoff(&self, email: &Email) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(EMAIL_TO_BACKOFF)?.remove(email.as_str())?;
        txn.commit()?;
        Ok(())
    }

    /// Drops counters whose last failure is older than `before`.
    pub fn purge_backoff(&self, before: OffsetDateTime) -> Result<usize> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut table = txn.open_table(EMAIL_TO_BACKOFF)?;
            let mut stale = Vec::new();
            for entry in table.iter()? {
                let (key, value) = entry?;
                let record: BackoffRecord = decode("backoff", value.value())?;
                if record.last_failure < before {
                    stale.push(key.value().to_owned());
                }
            }
            for key in &stale {
                table.remove(key.as_str())?;
            }
            stale.len()
        };
        txn.commit()?;
        Ok(removed)
    }
}
