//! Persistence behind a narrow interface: users, sessions and notes in one
//! redb file. Only this module opens transactions; nothing of redb leaks out
//! of it, so a second backend could stand behind the same methods.
//!
//! Every write commits with redb's default durability (fsync before the
//! commit returns), so a 2xx built on a write means the data is on disk.
//! All methods block: callers run them off the async workers.

mod backoff;
pub mod known;
mod notes;
mod sessions;
pub mod tables;
mod users;

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable};

pub use backoff::{BackoffRecord, CounterOf};
pub use notes::{Conditional, NoteQuery, NoteRecord, NoteUpdate, Quota};
pub use sessions::SessionRecord;
pub use users::UserRecord;

use tables::{
    EMAIL_TO_BACKOFF, EMAIL_TO_USER, GHOST_TO_BACKOFF, META, OWNER_NOTE_TO_RECORD, OWNER_TAG_NOTE_TO_UNIT,
    OWNER_TO_USAGE, SESSION_TO_RECORD, USER_SESSION_TO_UNIT, USER_TO_KNOWN_CLIENTS, USER_TO_RECORD,
};

/// Page cache size when none is configured.
pub const DEFAULT_CACHE_BYTES: usize = 64 * 1024 * 1024;

/// The schema this build reads and writes.
/// - 1: users, sessions, notes, tags, login backoff.
/// - 2: per-owner usage (note count and bytes) for the quotas; emails
///   NFKC + case-folded; known clients; login counters for existing
///   accounts only, per known client.
pub const SCHEMA_VERSION: u64 = 2;
const SCHEMA_KEY: &str = "schema_version";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database was written by a newer notesd.
    #[error(
        "the database has schema version {found}, newer than this notesd understands ({SCHEMA_VERSION}); upgrade notesd"
    )]
    NewerSchema { found: u64 },
    /// Another process holds the database open.
    #[error("the database is in use by another process (is notesd already running?)")]
    Locked,
    /// A stored record does not decode: a bug or a damaged file.
    #[error("corrupt record in table {table}: {source}")]
    Corrupt {
        table: &'static str,
        source: postcard::Error,
    },
    #[error("storage failure: {0}")]
    Backend(Box<dyn std::error::Error + Send + Sync>),
}

macro_rules! backend_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(err: $t) -> Self {
                StoreError::Backend(Box::new(err))
            }
        }
    )*};
}
backend_error!(
    redb::Error,
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

impl From<redb::DatabaseError> for StoreError {
    fn from(err: redb::DatabaseError) -> Self {
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Locked,
            other => StoreError::Backend(Box::new(other)),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Handle to the database; cheap to share behind an `Arc`.
pub struct Store {
    db: Database,
}

impl Store {
    /// Opens (or creates) the database file, creates missing tables and
    /// checks the schema version: a file from a newer notesd is refused
    /// rather than misread.
    pub fn open(path: &Path) -> Result<Self> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// As [`Store::open`], with the size of redb's page cache. redb's own
    /// default is 1 GiB, which on a small server would let the cache grow to
    /// most of the memory; pages it does not hold are read from the OS page
    /// cache instead.
    pub fn open_with_cache(path: &Path, cache_bytes: usize) -> Result<Self> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        let store = Self { db };
        store.init_schema()?;
        Ok(store)
    }

    fn init_schema(&self) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let found = meta.get(SCHEMA_KEY)?.map(|v| v.value());
            match found {
                Some(v) if v > SCHEMA_VERSION => return Err(StoreError::NewerSchema { found: v }),
                Some(1) => {
                    notes::count_usage(&txn)?;
                    let rekeyed = users::renormalise_emails(&txn)?;
                    tracing::info!(
                        from = 1,
                        to = 2,
                        emails_rekeyed = rekeyed,
                        "database schema upgraded: note usage counted, emails normalised"
                    );
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                }
                Some(_) => {}
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION)?;
                }
            }
            txn.open_table(OWNER_TO_USAGE)?;
            txn.open_table(USER_TO_RECORD)?;
            txn.open_table(EMAIL_TO_USER)?;
            txn.open_table(SESSION_TO_RECORD)?;
            txn.open_table(USER_SESSION_TO_UNIT)?;
            txn.open_table(OWNER_NOTE_TO_RECORD)?;
            txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?;
            txn.open_table(EMAIL_TO_BACKOFF)?;
            txn.open_table(USER_TO_KNOWN_CLIENTS)?;
            txn.open_table(GHOST_TO_BACKOFF)?;
        }
        txn.commit()?;
        Ok(())
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64> {
        let txn = self.db.begin_read()?;
        let meta = txn.open_table(META)?;
        Ok(meta.get(SCHEMA_KEY)?.map_or(0, |v| v.value()))
    }

    /// A cheap round trip through the database, for readiness checks.
    pub fn ping(&self) -> Result<()> {
        self.schema_version().map(|_| ())
    }

    #[cfg(test)]
    fn set_schema_version(&self, version: u64) -> Result<()> {
        let txn = self.db.begin_write()?;
        txn.open_table(META)?.insert(SCHEMA_KEY, version)?;
        txn.commit()?;
        Ok(())
    }
}

// Records are postcard (a compact serde binary format): decoding a note
// from JSON was a visible part of every read.
fn decode<T: serde::de::DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|source| StoreError::Corrupt { table, source })
}

fn encode<T: serde::Serialize>(table: &'static str, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|source| StoreError::Corrupt { table, source })
}

/// Reads one record by key, if present.
fn get_record<K, T>(
    table: &impl ReadableTable<K, &'static [u8]>,
    name: &'static str,
    key: K::SelfType<'_>,
) -> Result<Option<T>>
where
    K: redb::Key + 'static,
    T: serde::de::DeserializeOwned,
{
    match table.get(key)? {
        Some(guard) => decode(name, guard.value()).map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_1_database_gets_its_usage_counted() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        let owner = crate::domain::UserId::generate();
        let now = time::OffsetDateTime::now_utc();
        let note = NoteRecord {
            id: crate::domain::NoteId::generate().as_u128(),
            title: "abc".into(),
            content: "de".into(),
            tags: vec!["f".into()],
            created_at: now,
            updated_at: now,
            version: 1,
        };
        store.insert_notes(owner, &[note]).unwrap();
        // As a version 1 file had it: notes but no usage rows, emails only
        // lower-cased.
        let user = UserRecord {
            id: owner.as_u128(),
            email: "ａlice@example.com".into(),
            password_hash: "$argon2id$stub".into(),
            role: crate::domain::Role::User,
            disabled: false,
            created_at: now,
        };
        assert!(store.create_user_with_session(&user, None, &[]).unwrap());
        let txn = store.db.begin_write().unwrap();
        txn.open_table(OWNER_TO_USAGE)
            .unwrap()
            .remove(owner.as_u128())
            .unwrap();
        txn.commit().unwrap();
        store.set_schema_version(1).unwrap();
        drop(store);
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(store.usage(owner).unwrap(), (1, 6));
        let email = crate::domain::Email::parse("alice@example.com").unwrap();
        let found = store.user_by_email(&email).unwrap().expect("re-keyed");
        assert_eq!(
            (found.id, found.email.as_str()),
            (owner.as_u128(), "alice@example.com")
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.redb");
        let store = Store::open(&path).unwrap();
        assert_eq!(store.schema_version().unwrap(), SCHEMA_VERSION);
        store.set_schema_version(SCHEMA_VERSION + 1).unwrap();
        drop(store);
        let err = Store::open(&path).err().expect("must refuse");
        assert!(matches!(err, StoreError::NewerSchema { found } if found == SCHEMA_VERSION + 1));
        assert!(err.to_string().contains("upgrade notesd"));
    }
}
