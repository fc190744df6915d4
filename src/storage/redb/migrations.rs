//! Schema versions and the steps between them. Each version after the
//! first has one step from the version before it; at start, every step the
//! file still needs runs in order, each logged with what it did and how
//! long it took. Steps to version 3 run in the file, all in one write
//! transaction (an upgrade that fails leaves the file as it was). The step
//! to version 4, which seals the data at rest, writes a new file from the
//! old one and renames it into place (see [`super::copy::seal_v3`]), so
//! that no page of the file keeps the plain text. A file from a newer
//! notesd is refused.

use std::time::Instant;

use redb::{Database, ReadableTable, TableHandle, WriteTransaction};

use super::tables::{self, META};
use super::{accounts, notes, sessions, users};
use crate::storage::{Result, StorageError};

/// The schema this build reads and writes.
pub const SCHEMA_VERSION: u64 = 4;
/// The last version reached in the file itself; see the module comment.
pub const LAST_IN_PLACE: u64 = 3;
const SCHEMA_KEY: &str = "schema_version";

/// One upgrade: from `to - 1` to `to`.
struct Step {
    to: u64,
    /// What the step changes, for the log.
    what: &'static str,
    /// Runs the step; returns a summary of what it found, for the log.
    run: fn(&WriteTransaction) -> Result<String>,
}

/// Version 1: users, sessions, notes, tags, login backoff.
const STEPS: &[Step] = &[
    Step {
        to: 2,
        what: "per-owner usage counted for the quotas; emails NFKC + case-folded; known clients; \
               login counters per known client",
        run: to_v2,
    },
    Step {
        to: 3,
        what: "sessions record the coarse address and user agent of their login; admins are indexed",
        run: to_v3,
    },
];

fn to_v2(txn: &WriteTransaction) -> Result<String> {
    tables::create_all_v3(txn)?;
    let owners = notes::count_usage(txn)?;
    let rekeyed = users::renormalise_emails(txn)?;
    Ok(format!(
        "{owners} owners' usage counted, {rekeyed} emails re-keyed"
    ))
}

fn to_v3(txn: &WriteTransaction) -> Result<String> {
    tables::create_all_v3(txn)?;
    let rewritten = sessions::add_login_details(txn)?;
    let admins = accounts::index_admins(txn)?;
    Ok(format!("{rewritten} sessions rewritten, {admins} admins indexed"))
}

/// Brings the file to [`LAST_IN_PLACE`], or leaves it at
/// [`SCHEMA_VERSION`], and creates missing tables; a new file starts at
/// [`SCHEMA_VERSION`]. Returns the version found (0 for a new file).
pub fn upgrade(db: &Database) -> Result<u64> {
    let txn = db.begin_write()?;
    let found = txn.open_table(META)?.get(SCHEMA_KEY)?.map(|v| v.value());
    let from = match found {
        Some(v) if v > SCHEMA_VERSION => {
            return Err(StorageError::NewerSchema {
                found: v,
                understood: SCHEMA_VERSION,
            });
        }
        Some(v) => v,
        None => {
            // A file without a version is new, and holds nothing: one
            // that holds tables lost its version (damage, or someone
            // hoping the next start will think it new and start a fresh
            // audit log).
            let held = txn.list_tables()?.filter(|t| t.name() != META.name()).count();
            if held > 0 {
                return Err(StorageError::Corrupt {
                    table: META.name().to_owned(),
                    detail: format!(
                        "no schema version, yet {held} tables: refusing to treat the file as new"
                    ),
                });
            }
            tables::create_all(&txn)?;
            txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
            txn.commit()?;
            return Ok(0);
        }
    };
    if from == SCHEMA_VERSION {
        tables::create_all(&txn)?;
        txn.commit()?;
        return Ok(from);
    }
    for step in STEPS.iter().filter(|s| s.to > from) {
        let started = Instant::now();
        let summary = (step.run)(&txn)?;
        tracing::info!(
            from = step.to - 1,
            to = step.to,
            change = step.what,
            %summary,
            ms = started.elapsed().as_millis(),
            "database schema upgraded"
        );
    }
    // Also at the current version: a table added within a version (as
    // `known_clients` and `ghost_backoff` were during version 2) is created
    // in a file that lacks it.
    tables::create_all_v3(&txn)?;
    txn.open_table(META)?.insert(SCHEMA_KEY, LAST_IN_PLACE)?;
    txn.commit()?;
    Ok(from)
}

/// Records that the file is at [`SCHEMA_VERSION`] (after the step to 4).
pub fn set_current(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(META)?.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
    Ok(())
}

/// The version recorded in the file.
pub fn version(txn: &redb::ReadTransaction) -> Result<u64> {
    Ok(txn.open_table(META)?.get(SCHEMA_KEY)?.map_or(0, |v| v.value()))
}

#[cfg(test)]
pub fn set_version(db: &Database, version: u64) -> Result<()> {
    let txn = db.begin_write()?;
    txn.open_table(META)?.insert(SCHEMA_KEY, version)?;
    txn.commit()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_holds_tables_but_no_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let db = Database::create(&path).unwrap();
        upgrade(&db).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META).unwrap().remove(SCHEMA_KEY).unwrap();
        txn.commit().unwrap();
        assert!(matches!(upgrade(&db), Err(StorageError::Corrupt { .. })));
        let txn = redb::ReadableDatabase::begin_read(&db).unwrap();
        assert_eq!(version(&txn).unwrap(), 0, "left as it was");
    }

    #[test]
    fn every_version_has_one_step_from_the_one_before() {
        let versions: Vec<u64> = STEPS.iter().map(|s| s.to).collect();
        let expected: Vec<u64> = (2..=LAST_IN_PLACE).collect();
        assert_eq!(versions, expected);
        assert_eq!(SCHEMA_VERSION, LAST_IN_PLACE + 1, "and the sealing copy");
    }
}
