//! Failed-login counters, so an account under a guessing attack keeps
//! backing off after a restart. A counter is keyed by the normalised email
//! and, for a client the account knows, that client (see `auth::backoff`).
//!
//! Emails with no account get counters too (a backoff must not tell
//! whether an account exists), in a table of their own whose size is
//! capped: past the cap, new ones live in memory only. Stale counters are
//! purged in small batches, each its own short write.

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{
    Result, Store, decode, encode, get_record,
    tables::{EMAIL_TO_BACKOFF, GHOST_TO_BACKOFF},
};

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

const NAME: &str = "backoff";

/// Counters removed per write transaction when purging.
const PURGE_BATCH: usize = 256;

/// Whose counter: an existing account's, or an email's with no account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOf {
    Account,
    /// An email with no account; at most `cap` such counters are stored.
    Ghost {
        cap: u64,
    },
}

impl CounterOf {
    fn table(self) -> TableDefinition<'static, &'static str, &'static [u8]> {
        match self {
            CounterOf::Account => EMAIL_TO_BACKOFF,
            CounterOf::Ghost { .. } => GHOST_TO_BACKOFF,
        }
    }
}

impl Store {
    pub fn backoff(&self, key: &str, of: CounterOf) -> Result<Option<BackoffRecord>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(of.table())?;
        get_record(&table, NAME, key)
    }

    /// Stores a counter as it stands after a failure. A new ghost counter
    /// past the cap is not stored (`false`).
    pub fn put_backoff(&self, key: &str, record: &BackoffRecord, of: CounterOf) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let stored = {
            let mut table = txn.open_table(of.table())?;
            let full = match of {
                CounterOf::Ghost { cap } => table.len()? >= cap && table.get(key)?.is_none(),
                CounterOf::Account => false,
            };
            if !full {
                let bytes = encode(NAME, record)?;
                table.insert(key, bytes.as_slice())?;
            }
            !full
        };
        if stored {
            txn.commit()?;
        } else {
            txn.abort()?;
        }
        Ok(stored)
    }

    /// Forgets a counter (after a successful login).
    pub fn clear_backoff(&self, key: &str) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(EMAIL_TO_BACKOFF)?.remove(key)?;
        txn.commit()?;
        Ok(())
    }

    /// Drops counters whose last failure is older than `before`, in both
    /// tables.
    pub fn purge_backoff(&self, before: OffsetDateTime) -> Result<usize> {
        Ok(self.purge_counters(EMAIL_TO_BACKOFF, before)? + self.purge_counters(GHOST_TO_BACKOFF, before)?)
    }

    /// One table's purge, a batch at a time: each batch is found by a read
    /// and removed by a short write, so the writer is never held for a
    /// whole-table scan.
    fn purge_counters(
        &self,
        definition: TableDefinition<'static, &'static str, &'static [u8]>,
        before: OffsetDateTime,
    ) -> Result<usize> {
        let mut removed = 0;
        let mut after: Option<String> = None;
        loop {
            let (stale, last) = {
                let txn = self.db.begin_read()?;
                let table = txn.open_table(definition)?;
                let range = match &after {
                    Some(key) => table.range::<&str>((
                        std::ops::Bound::Excluded(key.as_str()),
                        std::ops::Bound::Unbounded,
                    ))?,
                    None => table.range::<&str>(..)?,
                };
                let mut stale = Vec::new();
                let mut last = None;
                for entry in range.take(PURGE_BATCH * 4) {
                    let (key, value) = entry?;
                    let record: BackoffRecord = decode(NAME, value.value())?;
                    if record.last_failure < before {
                        stale.push(key.value().to_owned());
                    }
                    last = Some(key.value().to_owned());
                    if stale.len() == PURGE_BATCH {
                        break;
                    }
                }
                (stale, last)
            };
            if !stale.is_empty() {
                let txn = self.db.begin_write()?;
                {
                    let mut table = txn.open_table(definition)?;
                    for key in &stale {
                        // Gone or refreshed since the read: leave a fresh one.
                        let current: Option<BackoffRecord> = get_record(&table, NAME, key.as_str())?;
                        if current.is_some_and(|r| r.last_failure < before) {
                            table.remove(key.as_str())?;
                            removed += 1;
                        }
                    }
                }
                txn.commit()?;
            }
            match last {
                Some(key) => after = Some(key),
                None => return Ok(removed),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_counters_are_purged_in_batches_and_fresh_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db")).unwrap();
        let now = OffsetDateTime::now_utc();
        let record = |age_days: i64| BackoffRecord {
            failures: 3,
            last_failure: now - time::Duration::days(age_days),
            until: now,
        };
        let account = CounterOf::Account;
        for i in 0..600 {
            store
                .put_backoff(&format!("old{i:04}@x.org"), &record(2), account)
                .unwrap();
        }
        store.put_backoff("fresh@x.org", &record(0), account).unwrap();
        let ghost = CounterOf::Ghost { cap: 2 };
        assert!(store.put_backoff("g1@x.org", &record(2), ghost).unwrap());
        assert!(store.put_backoff("g2@x.org", &record(0), ghost).unwrap());
        assert!(
            !store.put_backoff("g3@x.org", &record(0), ghost).unwrap(),
            "past the cap"
        );
        assert!(
            store.put_backoff("g2@x.org", &record(0), ghost).unwrap(),
            "an existing one is updated"
        );
        let removed = store.purge_backoff(now - time::Duration::days(1)).unwrap();
        assert_eq!(removed, 601);
        assert!(store.backoff("fresh@x.org", account).unwrap().is_some());
        assert!(store.backoff("old0001@x.org", account).unwrap().is_none());
        assert!(store.backoff("g2@x.org", ghost).unwrap().is_some());
        assert!(
            store.put_backoff("g3@x.org", &record(0), ghost).unwrap(),
            "room again"
        );
    }
}
