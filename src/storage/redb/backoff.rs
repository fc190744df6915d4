//! Failed-login counters: one table for existing accounts' counters, one
//! (capped in size) for emails with no account.

use redb::{ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};
use time::OffsetDateTime;

use super::get_row;
use super::rows::{BackoffRow, decode, encode};
use super::tables::{EMAIL_TO_BACKOFF, GHOST_TO_BACKOFF};
use crate::seal::Sealer;
use crate::storage::{BackoffRecord, CounterOf, Result};

type Definition = TableDefinition<'static, &'static str, &'static [u8]>;

pub fn table(of: CounterOf) -> Definition {
    match of {
        CounterOf::Account => EMAIL_TO_BACKOFF,
        CounterOf::Ghost { .. } => GHOST_TO_BACKOFF,
    }
}

/// How a counter's key (an email, or an email, a newline and the client it
/// is for) is stored: blind indexes (see [`crate::seal`]), the email's
/// first so that an account's counters stay together.
pub fn stored_key(sealer: &Sealer, key: &str) -> String {
    match key.split_once('\n') {
        Some((email, _)) => format!("{}\n{}", sealer.email_index(email), sealer.email_index(key)),
        None => sealer.email_index(key),
    }
}

pub fn get(
    txn: &ReadTransaction,
    key: &str,
    of: CounterOf,
    sealer: &Sealer,
) -> Result<Option<BackoffRecord>> {
    let counters = txn.open_table(table(of))?;
    Ok(get_row::<_, BackoffRow>(&counters, stored_key(sealer, key).as_str())?.map(BackoffRecord::from))
}

/// Stores a counter; a new ghost counter past the cap is not (`false`).
pub fn put(
    txn: &WriteTransaction,
    key: &str,
    counter: &BackoffRecord,
    of: CounterOf,
    sealer: &Sealer,
) -> Result<bool> {
    let key = stored_key(sealer, key);
    let key = key.as_str();
    let definition = table(of);
    let mut counters = txn.open_table(definition)?;
    if let CounterOf::Ghost { cap } = of
        && counters.len()? >= cap
        && counters.get(key)?.is_none()
    {
        return Ok(false);
    }
    let bytes = encode(&definition, &BackoffRow::from(counter))?;
    counters.insert(key, bytes.as_slice())?;
    Ok(true)
}

pub fn clear(txn: &WriteTransaction, key: &str, sealer: &Sealer) -> Result<bool> {
    Ok(txn
        .open_table(EMAIL_TO_BACKOFF)?
        .remove(stored_key(sealer, key).as_str())?
        .is_some())
}

/// Up to `batch` keys of counters stale by `before`, after `after`
/// (exclusive), reading at most four times that many; and the last key
/// read.
pub fn stale_after(
    txn: &ReadTransaction,
    definition: Definition,
    after: Option<&str>,
    before: OffsetDateTime,
    batch: usize,
) -> Result<(Vec<String>, Option<String>)> {
    let counters = txn.open_table(definition)?;
    let range = match after {
        Some(key) => counters.range::<&str>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded))?,
        None => counters.range::<&str>(..)?,
    };
    let mut stale = Vec::new();
    let mut last = None;
    for entry in range.take(batch * 4) {
        let (key, value) = entry?;
        let row: BackoffRow = decode(&definition, value.value())?;
        if row.last_failure < before {
            stale.push(key.value().to_owned());
        }
        last = Some(key.value().to_owned());
        if stale.len() == batch {
            break;
        }
    }
    Ok((stale, last))
}

/// Removes those of `keys` still stale.
pub fn remove_stale(
    txn: &WriteTransaction,
    definition: Definition,
    keys: &[String],
    before: OffsetDateTime,
) -> Result<usize> {
    let mut counters = txn.open_table(definition)?;
    let mut removed = 0;
    for key in keys {
        let current: Option<BackoffRow> = get_row(&counters, key.as_str())?;
        if current.is_some_and(|row| row.last_failure < before) {
            counters.remove(key.as_str())?;
            removed += 1;
        }
    }
    Ok(removed)
}
