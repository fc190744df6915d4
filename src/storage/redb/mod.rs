//! The redb backend: users, sessions and notes in one file.
//!
//! Where each operation runs:
//! - Point reads and first pages, on the calling worker. They take a few
//!   microseconds from redb's cache, less than the two thread switches a
//!   trip through a pool costs (moving the note read inline took
//!   authenticated reads from about 20 k to about 33 k requests per second
//!   in `make bench`). The price: a read that misses the cache waits for
//!   one short `pread` on an async worker.
//! - Writes, on the one writer thread, which commits them in batches (see
//!   [`writer`]). redb runs one write transaction at a time anyway; one
//!   commit per batch pays one fsync for many writes.
//! - Searches and purge scans, on idle-priority threads (one fewer than
//!   the cores, at least one; see [`crate::pool`]), so a flood of searches
//!   takes only the CPU time reads leave. A full queue answers
//!   [`StorageError::Busy`].
//!
//! Every commit uses redb's default durability (fsync before the commit
//! returns), so a write acknowledged to its caller is on disk.

mod accounts;
mod audit;
mod backoff;
pub mod copy;
mod handle;
mod known;
mod mfa;
pub mod migrations;
mod notes;
mod rows;
mod sessions;
pub mod tables;
mod users;
mod writer;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata};
use time::OffsetDateTime;

use crate::audit::{AuditEvent, AuditQuery, AuditRecord, AuditVerdict};
use crate::domain::{InviteId, NoteId, Role, SessionId, UserId};
use crate::metrics::WriteStats;
use crate::pool::{IdlePool, PoolError};
use crate::seal::Sealer;
use crate::storage::{
    AccountChange, BackoffRecord, Conditional, CounterOf, Created, InviteClaim, InviteRecord, KnownClient,
    MfaChange, MfaOutcome, MfaProof, MfaRecord, NotePage, NoteQuery, NoteRecord, NoteUpdate, Quota,
    RecordCounts, Result, SessionCutoffs, SessionRecord, Storage, StorageError, UserRecord,
};
use tables::{
    EMAIL_TO_BACKOFF, GHOST_TO_BACKOFF, OWNER_NOTE_TO_RECORD, OWNER_TAG_NOTE_TO_UNIT, SESSION_TO_RECORD,
    USER_TO_KNOWN_CLIENTS, USER_TO_RECORD,
};
use writer::Writer;

pub use migrations::SCHEMA_VERSION;

/// Page cache size when none is configured: room for every branch page of
/// a large database and the whole of a personal one (a few thousand notes);
/// pages beyond it are read through the OS page cache, at some cost to
/// random reads over a larger database (README, Performance).
pub const DEFAULT_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Writes allowed to wait for the writer when none is configured.
pub const DEFAULT_WRITE_QUEUE: usize = 1024;
/// Searches and purge scans allowed to wait for a scanning thread.
const SCAN_QUEUE: usize = 64;
/// Rows removed per write by the purges.
const PURGE_BATCH: usize = 256;

/// How the file is opened.
#[derive(Debug, Clone)]
pub struct Options {
    /// redb's page cache. redb's own default is 1 GiB, which on a small
    /// server would let the cache grow to most of the memory; pages it
    /// does not hold are read from the OS page cache instead.
    pub cache_bytes: usize,
    /// Writes that may wait for the writer; past this, writes are refused.
    pub write_queue: usize,
    /// The key that chains the audit log's records (from the key ring).
    pub audit_key: [u8; 32],
    /// Seals note text and accounts, from the key ring's data key.
    pub sealer: Arc<Sealer>,
}

impl Options {
    /// The defaults, with the key ring's keys.
    pub fn with_keys(audit_key: [u8; 32], sealer: Arc<Sealer>) -> Self {
        Self {
            cache_bytes: DEFAULT_CACHE_BYTES,
            write_queue: DEFAULT_WRITE_QUEUE,
            audit_key,
            sealer,
        }
    }

    /// The options that open the files of `ring`.
    pub fn for_ring(ring: &crate::auth::keyring::KeyRing) -> Self {
        Self::with_keys(*ring.audit_key(), Arc::new(Sealer::new(ring.data_key())))
    }
}

/// Fixed keys, for the unit tests only: a store is always opened with its
/// key ring's.
#[cfg(test)]
impl Default for Options {
    fn default() -> Self {
        Self::with_keys([0; 32], Arc::new(Sealer::new(&[0; 32])))
    }
}

/// An I/O failure (a full disk, a failing device) makes the store
/// unavailable until its file is opened again (see [`handle`]); any other
/// backend error is a bug or damage.
fn classify(err: redb::Error) -> StorageError {
    match err {
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
            StorageError::Unavailable(Arc::new(err))
        }
        other => StorageError::Backend(Arc::new(other)),
    }
}

macro_rules! backend_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(err: $t) -> Self {
                classify(err.into())
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

impl From<redb::DatabaseError> for StorageError {
    fn from(err: redb::DatabaseError) -> Self {
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Locked,
            other => StorageError::Backend(Arc::new(other)),
        }
    }
}

pub struct RedbStorage {
    handle: Arc<handle::Handle>,
    audit_key: [u8; 32],
    sealer: Arc<Sealer>,
    writer: Writer,
    scanners: IdlePool<()>,
}

impl RedbStorage {
    /// Opens (or creates) the database file and brings its schema to this
    /// build's version (see [`migrations`]); a file from a newer notesd is
    /// refused rather than misread.
    pub fn open(path: &Path, options: Options) -> Result<Self> {
        let open = || {
            Database::builder()
                .set_cache_size(options.cache_bytes)
                .create(path)
        };
        let mut db = open()?;
        let found = migrations::upgrade(&db)?;
        if found < 3 {
            // The audit log begins with this file, or with this version.
            let txn = db.begin_write()?;
            audit::begin(&txn, &options.audit_key)?;
            txn.commit()?;
        }
        if found != 0 && found < SCHEMA_VERSION {
            drop(db);
            seal_file(path, &options.sealer)?;
            db = open()?;
        }
        check_seal(&db, &options.sealer)?;
        let handle = handle::Handle::new(Arc::new(db), path.to_owned(), options.cache_bytes);
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        let io = |e: std::io::Error| StorageError::Backend(Arc::new(e));
        Ok(Self {
            writer: Writer::start(handle.clone(), options.write_queue).map_err(io)?,
            scanners: IdlePool::new("scan", cores.saturating_sub(1).max(1), SCAN_QUEUE).map_err(io)?,
            audit_key: options.audit_key,
            sealer: options.sealer,
            handle,
        })
    }

    /// The open database (tests reach under the storage operations).
    #[cfg(test)]
    fn db(&self) -> Arc<Database> {
        match self.handle.get() {
            Ok((_, db)) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// Writes waiting, refused and per commit, for the metrics.
    pub fn write_stats(&self) -> Arc<WriteStats> {
        self.writer.stats()
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64> {
        self.read(migrations::version)
    }

    /// A short read, on the calling thread.
    fn read<T>(&self, work: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        self.handle.with(|db| work(&db.begin_read()?))
    }

    /// A long read, on a scanning thread.
    async fn scan<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&ReadTransaction) -> Result<T> + Send + 'static,
    {
        let handle = self.handle.clone();
        match self
            .scanners
            .run(move |()| handle.with(|db| work(&db.begin_read()?)))
            .await
        {
            Ok(result) => result,
            Err(PoolError::Full) => Err(StorageError::Busy),
            Err(PoolError::Stopped) => Err(StorageError::Stopped("scanning pool")),
        }
    }
}

impl RedbStorage {
    /// Runs an account change on the writer, never shed, with its event
    /// stored when it is done.
    async fn account_change<T, F>(&self, event: AuditEvent, mut change: F) -> Result<AccountChange<T>>
    where
        T: Send + 'static,
        F: FnMut(&redb::WriteTransaction) -> Result<AccountChange<T>> + Send + 'static,
    {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                let outcome = change(txn)?;
                let done = matches!(outcome, AccountChange::Done(_));
                if done {
                    audit::append(txn, &key, &event)?;
                }
                Ok((outcome, done))
            })
            .await
    }
}

fn counts(txn: &ReadTransaction) -> Result<RecordCounts> {
    Ok(RecordCounts {
        users: txn.open_table(USER_TO_RECORD)?.len()?,
        sessions: txn.open_table(SESSION_TO_RECORD)?.len()?,
        notes: txn.open_table(OWNER_NOTE_TO_RECORD)?.len()?,
        tag_entries: txn.open_table(OWNER_TAG_NOTE_TO_UNIT)?.len()?,
        login_counters: txn.open_table(EMAIL_TO_BACKOFF)?.len()?,
        ghost_counters: txn.open_table(GHOST_TO_BACKOFF)?.len()?,
        known_client_lists: txn.open_table(USER_TO_KNOWN_CLIENTS)?.len()?,
        audit_records: audit::count(txn)?,
    })
}

impl RedbStorage {
    /// Writes a copy of the whole database as one read transaction sees
    /// it into the new file `to`, durably; writes go on meanwhile (a
    /// reader never blocks redb's writer). Returns that snapshot's counts
    /// and the rows copied. Blocking: run it off the async workers.
    pub fn snapshot_into(
        &self,
        to: &Path,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<(RecordCounts, u64)> {
        let io = |e: std::io::Error| StorageError::Backend(Arc::new(e));
        crate::fsutil::create_private(to).map_err(io)?;
        let (_, db) = self.handle.get()?;
        let txn = db.begin_read()?;
        let snapshot = counts(&txn)?;
        // Every row of every table: what the copy will count as done.
        let mut total = 0;
        for table in txn.list_tables()? {
            total += txn.open_untyped_table(table)?.len()?;
        }
        let dst = Database::builder().set_cache_size(4 * 1024 * 1024).create(to)?;
        let rows = copy::everything(&txn, &dst, &mut |done| progress(done, total))?;
        // A table the copy does not know (one added without adding it to
        // the copy) would be lost from every backup: refuse instead.
        if rows != total {
            return Err(StorageError::Corrupt {
                table: "*".to_owned(),
                detail: format!("the copy holds {rows} of the {total} rows: a table was left out"),
            });
        }
        Ok((snapshot, rows))
    }

    /// Checks a copy made by [`Self::snapshot_into`]: redb's integrity
    /// check, then, opened with `options` (so the key ring must be the
    /// one that sealed it), every account and up to `sample` notes open.
    /// Returns its counts. Blocking.
    pub fn verify_copy(path: &Path, options: Options, sample: usize) -> Result<RecordCounts> {
        {
            let mut db = Database::builder()
                .set_cache_size(options.cache_bytes)
                .create(path)?;
            if !db.check_integrity()? {
                return Err(StorageError::Corrupt {
                    table: "(file)".to_owned(),
                    detail: "the copy needed repair".to_owned(),
                });
            }
        }
        let sealer = options.sealer.clone();
        let store = Self::open(path, options)?;
        let (_, db) = store.handle.get()?;
        let txn = db.begin_read()?;
        let users = txn.open_table(USER_TO_RECORD)?;
        for entry in users.iter()? {
            let (id, _) = entry?;
            if let Some(row) = rows::user_row(&users, id.value())? {
                row.open(&sealer)?;
            }
        }
        let notes = txn.open_table(OWNER_NOTE_TO_RECORD)?;
        let mut plain = Vec::new();
        for entry in notes.iter()?.take(sample) {
            let (key, value) = entry?;
            let (owner, id) = key.value();
            rows::decode_borrowed::<rows::NoteRowView<'_>>(&OWNER_NOTE_TO_RECORD, value.value())?.open(
                id,
                &sealer.opener(owner),
                &mut plain,
            )?;
        }
        counts(&txn)
    }
}

/// Schema 3 → 4: writes the file's rows, sealed, into a new file beside it
/// and renames that over it.
fn seal_file(path: &Path, sealer: &Sealer) -> Result<()> {
    let io = |e: std::io::Error| StorageError::Backend(Arc::new(e));
    let sealing = path.with_extension("sealing");
    let _ = std::fs::remove_file(&sealing);
    crate::fsutil::create_private(&sealing).map_err(io)?;
    let src = Database::builder().create(path)?;
    let dst = Database::builder().create(&sealing)?;
    let txn = src.begin_read()?;
    let (users, notes) = (
        txn.open_table(USER_TO_RECORD)?.len()?,
        txn.open_table(OWNER_NOTE_TO_RECORD)?.len()?,
    );
    // Every row of the old file: the copy counts as done each row it
    // writes (indexes rebuilt blind are not counted, so it never passes).
    let mut total = 0;
    for table in txn.list_tables()? {
        total += txn.open_untyped_table(table)?.len()?;
    }
    tracing::info!(
        users,
        notes,
        "sealing the database (schema 3 to 4): accounts and notes encrypted into a new file"
    );
    let mut progress = crate::progress::Progress::new("sealing", total, false);
    let rows = copy::seal_v3(&txn, &dst, sealer, &mut |done| progress.at(done))?;
    drop(txn);
    drop(src);
    drop(dst);
    std::fs::File::open(&sealing)
        .and_then(|f| f.sync_all())
        .map_err(io)?;
    std::fs::rename(&sealing, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    }
    let took = progress.finish();
    tracing::info!(
        from = 3,
        to = SCHEMA_VERSION,
        change = "note text, tags and accounts sealed; emails, login counters and tags indexed blind; the file written anew, so no freed page holds plain text",
        rows,
        ms = took.as_millis(),
        "database schema upgraded"
    );
    Ok(())
}

const CHECK_KEY: &str = "data key";
const CHECK_TEXT: &[u8] = b"notesd";

/// Writes the file's check value, sealed with `sealer`.
fn write_check(txn: &redb::WriteTransaction, sealer: &Sealer) -> Result<()> {
    let value = sealer
        .seal(crate::seal::Field::Check, 0, 0, CHECK_TEXT)
        .map_err(|e| StorageError::Backend(Arc::new(e)))?;
    txn.open_table(tables::SEAL_CHECK)?
        .insert(CHECK_KEY, value.as_slice())?;
    Ok(())
}

/// Opens the file's check value with `sealer`, or writes it in a new file;
/// a key ring that is not the file's is refused, and so is a file that
/// holds accounts but lost its check value (any ring would pass it).
fn check_seal(db: &Database, sealer: &Sealer) -> Result<()> {
    let txn = db.begin_write()?;
    let stored = txn
        .open_table(tables::SEAL_CHECK)?
        .get(CHECK_KEY)?
        .map(|v| v.value().to_vec());
    if let Some(value) = stored {
        let opened = sealer.open(crate::seal::Field::Check, 0, 0, &value);
        if opened.as_deref().ok() != Some(CHECK_TEXT) {
            return Err(StorageError::WrongKey);
        }
        return Ok(());
    }
    if !txn.open_table(USER_TO_RECORD)?.is_empty()? {
        return Err(StorageError::WrongKey);
    }
    write_check(&txn, sealer)?;
    txn.commit()?;
    Ok(())
}

impl Drop for RedbStorage {
    fn drop(&mut self) {
        // The queued writes finish and the writer lets go of the file.
        self.writer.stop();
        drop(self.handle.close());
    }
}

/// Reads one row by key, if present.
fn get_row<K, T>(
    table: &(impl ReadableTable<K, &'static [u8]> + redb::TableHandle),
    key: K::SelfType<'_>,
) -> Result<Option<T>>
where
    K: redb::Key + 'static,
    T: serde::de::DeserializeOwned,
{
    match table.get(key)? {
        Some(guard) => rows::decode(table, guard.value()).map(Some),
        None => Ok(None),
    }
}

impl Storage for RedbStorage {
    async fn create_account(
        &self,
        user: UserRecord,
        session: Option<SessionRecord>,
        seen: Vec<KnownClient>,
        invite: Option<InviteClaim>,
        events: Vec<AuditEvent>,
    ) -> Result<Created> {
        let key = self.audit_key;
        let sealer = self.sealer.clone();
        self.writer
            .write(move |txn| {
                // The invite first (only reads): without a usable one,
                // nothing about the email is told. A taken email then
                // leaves the invite unused.
                if let Some(claim) = &invite
                    && !accounts::invite_claimable(txn, claim)?
                {
                    return Ok((Created::InviteRefused, false));
                }
                if !users::create(txn, &user, &sealer)? {
                    return Ok((Created::EmailTaken, false));
                }
                if let Some(claim) = &invite {
                    accounts::claim_invite(txn, claim, user.id)?;
                }
                accounts::index_if_admin(txn, &user)?;
                if let Some(session) = &session {
                    sessions::insert(txn, session)?;
                }
                known::remember(txn, user.id, &seen)?;
                audit::append_all(txn, &key, &events)?;
                Ok((Created::Created, true))
            })
            .await
    }

    async fn delete_account(
        &self,
        user: UserId,
        verified: Option<String>,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<AccountChange<Vec<SessionId>>> {
        let sealer = self.sealer.clone();
        self.account_change(event, move |txn| {
            accounts::delete(txn, user, verified.as_deref(), at, &sealer)
        })
        .await
    }

    async fn set_role(
        &self,
        user: UserId,
        role: Role,
        event: AuditEvent,
    ) -> Result<AccountChange<UserRecord>> {
        let sealer = self.sealer.clone();
        self.account_change(event, move |txn| accounts::set_role(txn, user, role, &sealer))
            .await
    }

    async fn set_disabled(
        &self,
        user: UserId,
        disabled: bool,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<AccountChange<Vec<SessionId>>> {
        self.account_change(event, move |txn| accounts::set_disabled(txn, user, disabled, at))
            .await
    }

    async fn reset_password(
        &self,
        user: UserId,
        hash: String,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<AccountChange<Vec<SessionId>>> {
        let sealer = self.sealer.clone();
        self.account_change(event, move |txn| {
            accounts::reset_password(txn, user, &hash, at, &sealer)
        })
        .await
    }

    async fn end_user_sessions(
        &self,
        user: UserId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<AccountChange<Vec<SessionId>>> {
        self.account_change(event, move |txn| accounts::end_sessions(txn, user, at))
            .await
    }

    async fn users_page(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> Result<(Vec<UserRecord>, Option<String>)> {
        let sealer = self.sealer.clone();
        self.scan(move |txn| accounts::page(txn, &prefix, after.as_deref(), limit, &sealer))
            .await
    }

    async fn create_invite(&self, invite: InviteRecord, event: AuditEvent) -> Result<()> {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                accounts::put_invite(txn, &invite)?;
                audit::append(txn, &key, &event)?;
                Ok(((), true))
            })
            .await
    }

    async fn invites(&self, limit: usize) -> Result<Vec<InviteRecord>> {
        self.scan(move |txn| accounts::invites(txn, limit)).await
    }

    async fn invite(&self, id: InviteId) -> Result<Option<InviteRecord>> {
        self.read(|txn| accounts::invite(txn, id))
    }

    async fn delete_invite(&self, id: InviteId, event: AuditEvent) -> Result<bool> {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                let done = accounts::delete_invite(txn, id)?;
                if done {
                    audit::append(txn, &key, &event)?;
                }
                Ok((done, done))
            })
            .await
    }

    async fn user(&self, id: UserId) -> Result<Option<UserRecord>> {
        self.read(|txn| users::get(txn, id, &self.sealer))
    }

    async fn user_by_email(&self, email: &str) -> Result<Option<UserRecord>> {
        self.read(|txn| users::by_email(txn, email, &self.sealer))
    }

    async fn set_password_hash(&self, id: UserId, expected: String, hash: String) -> Result<bool> {
        let sealer = self.sealer.clone();
        self.writer
            .write(move |txn| {
                users::replace_password_hash(txn, id, &expected, &hash, &sealer).map(|done| (done, done))
            })
            .await
    }

    async fn change_password(
        &self,
        user: UserId,
        verified: String,
        hash: String,
        keep: SessionId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<AccountChange<Vec<SessionId>>> {
        let sealer = self.sealer.clone();
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                // Checked in the transaction: of two sessions changing the
                // password at once, the second finds itself ended.
                if !sessions::is_live(txn, user, keep)? {
                    return Ok((AccountChange::NotFound, false));
                }
                if !users::replace_password_hash(txn, user, &verified, &hash, &sealer)? {
                    return Ok((AccountChange::Stale, false));
                }
                let ended = sessions::end_others(txn, user, keep, at)?;
                audit::append(txn, &key, &event)?;
                Ok((AccountChange::Done(ended), true))
            })
            .await
    }

    async fn create_session(
        &self,
        session: SessionRecord,
        seen: Vec<KnownClient>,
        verified: String,
        event: AuditEvent,
    ) -> Result<bool> {
        let sealer = self.sealer.clone();
        let key = self.audit_key;
        self.writer
            .write(move |txn| {
                if !users::still_as_verified(txn, session.user_id, &verified, &sealer)? {
                    return Ok((false, false));
                }
                sessions::insert(txn, &session)?;
                known::remember(txn, session.user_id, &seen)?;
                audit::append(txn, &key, &event)?;
                Ok((true, true))
            })
            .await
    }

    async fn mfa(&self, user: UserId) -> Result<Option<MfaRecord>> {
        self.read(|txn| mfa::get(txn, user, &self.sealer))
    }

    async fn change_mfa(
        &self,
        user: UserId,
        proof: MfaProof,
        change: MfaChange,
        events: Vec<AuditEvent>,
    ) -> Result<MfaOutcome> {
        let sealer = self.sealer.clone();
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                let outcome = mfa::change(txn, user, &proof, &change, &sealer)?;
                let done = outcome == MfaOutcome::Done;
                if done {
                    for event in &events {
                        audit::append(txn, &key, event)?;
                    }
                }
                Ok((outcome, done))
            })
            .await
    }

    async fn session(&self, id: SessionId) -> Result<Option<SessionRecord>> {
        self.read(|txn| sessions::get(txn, id))
    }

    async fn replace_session(
        &self,
        current: SessionRecord,
        next: SessionRecord,
        event: Option<AuditEvent>,
    ) -> Result<bool> {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                let done = sessions::replace(txn, &current, &next)?;
                if done && let Some(event) = &event {
                    audit::append(txn, &key, event)?;
                }
                Ok((done, done))
            })
            .await
    }

    async fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<bool> {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                let done = sessions::revoke(txn, user, id, at)?;
                if done {
                    audit::append(txn, &key, &event)?;
                }
                Ok((done, done))
            })
            .await
    }

    async fn sessions_of(
        &self,
        user: UserId,
        after: Option<SessionId>,
        limit: usize,
        cutoffs: SessionCutoffs,
    ) -> Result<(Vec<SessionRecord>, Option<SessionId>)> {
        self.scan(move |txn| sessions::of_user(txn, user, after, limit, &cutoffs))
            .await
    }

    async fn end_other_sessions(
        &self,
        user: UserId,
        keep: SessionId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> Result<Option<Vec<SessionId>>> {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| {
                if !sessions::is_live(txn, user, keep)? {
                    return Ok((None, false));
                }
                let ended = sessions::end_others(txn, user, keep, at)?;
                let wrote = !ended.is_empty();
                if wrote {
                    audit::append(txn, &key, &event)?;
                }
                Ok((Some(ended), wrote))
            })
            .await
    }

    async fn session_count(&self) -> Result<u64> {
        self.read(sessions::count)
    }

    async fn sessions_revoked_since(&self, since: OffsetDateTime) -> Result<Vec<SessionId>> {
        self.scan(move |txn| sessions::revoked_since(txn, since)).await
    }

    async fn purge_sessions(&self, cutoffs: SessionCutoffs) -> Result<usize> {
        let mut removed = 0;
        let mut after = None;
        loop {
            let (dead, last) = self
                .scan(move |txn| sessions::dead_after(txn, after, &cutoffs, PURGE_BATCH))
                .await?;
            if !dead.is_empty() {
                removed += self
                    .writer
                    .write(move |txn| sessions::remove_dead(txn, &dead, &cutoffs).map(|n| (n, n > 0)))
                    .await?;
            }
            match last {
                Some(key) => after = Some(key),
                None => return Ok(removed),
            }
        }
    }

    async fn known_clients(&self, user: UserId) -> Result<Vec<KnownClient>> {
        self.read(|txn| known::get(txn, user))
    }

    async fn login_counter(&self, key: &str, of: CounterOf) -> Result<Option<BackoffRecord>> {
        self.read(|txn| backoff::get(txn, key, of, &self.sealer))
    }

    async fn record_failure(
        &self,
        key: String,
        counter: BackoffRecord,
        of: CounterOf,
        events: Vec<AuditEvent>,
    ) -> Result<bool> {
        let sealer = self.sealer.clone();
        let audit_key = self.audit_key;
        self.writer
            .write(move |txn| {
                let stored = backoff::put(txn, &key, &counter, of, &sealer)?;
                audit::append_all(txn, &audit_key, &events)?;
                Ok((stored, stored || !events.is_empty()))
            })
            .await
    }

    async fn clear_failures(&self, key: String) -> Result<()> {
        let sealer = self.sealer.clone();
        self.writer
            .write(move |txn| backoff::clear(txn, &key, &sealer).map(|removed| ((), removed)))
            .await
    }

    async fn purge_counters(&self, before: OffsetDateTime) -> Result<usize> {
        let mut removed = 0;
        for definition in [EMAIL_TO_BACKOFF, GHOST_TO_BACKOFF] {
            let mut after: Option<String> = None;
            loop {
                let from = after.clone();
                let (stale, last) = self
                    .scan(move |txn| {
                        backoff::stale_after(txn, definition, from.as_deref(), before, PURGE_BATCH)
                    })
                    .await?;
                if !stale.is_empty() {
                    removed += self
                        .writer
                        .write(move |txn| {
                            backoff::remove_stale(txn, definition, &stale, before).map(|n| (n, n > 0))
                        })
                        .await?;
                }
                match last {
                    Some(key) => after = Some(key),
                    None => break,
                }
            }
        }
        Ok(removed)
    }

    async fn create_note(&self, owner: UserId, note: NoteRecord, quota: Quota) -> Result<Conditional<()>> {
        let note = notes::Prepared::new(owner.as_u128(), &note, &self.sealer)?;
        self.writer
            .write(move |txn| {
                let outcome = notes::create(txn, owner, &note, &quota)?;
                let wrote = matches!(outcome, Conditional::Done(()));
                Ok((outcome, wrote))
            })
            .await
    }

    async fn import_notes(&self, owner: UserId, batch: Vec<NoteRecord>) -> Result<()> {
        let batch = batch
            .iter()
            .map(|note| notes::Prepared::new(owner.as_u128(), note, &self.sealer))
            .collect::<Result<Vec<_>>>()?;
        self.writer
            .write(move |txn| notes::import(txn, owner, &batch).map(|()| ((), true)))
            .await
    }

    async fn note(&self, owner: UserId, id: NoteId) -> Result<Option<NoteRecord>> {
        self.read(|txn| notes::get(txn, owner, id, &self.sealer))
    }

    async fn update_note(
        &self,
        owner: UserId,
        id: NoteId,
        update: NoteUpdate,
        quota: Quota,
    ) -> Result<Conditional<NoteRecord>> {
        let sealer = self.sealer.clone();
        self.writer
            .write(move |txn| {
                let outcome = notes::update(txn, owner, id, &update, &quota, &sealer)?;
                let wrote = matches!(outcome, Conditional::Done(_));
                Ok((outcome, wrote))
            })
            .await
    }

    async fn delete_note(
        &self,
        owner: UserId,
        id: NoteId,
        expected_version: Option<Vec<u64>>,
    ) -> Result<Conditional<()>> {
        let sealer = self.sealer.clone();
        self.writer
            .write(move |txn| {
                let outcome = notes::delete(txn, owner, id, expected_version.as_deref(), &sealer)?;
                let wrote = matches!(outcome, Conditional::Done(()));
                Ok((outcome, wrote))
            })
            .await
    }

    async fn list_notes(&self, owner: UserId, query: NoteQuery) -> Result<NotePage> {
        if query.q.is_some() {
            let sealer = self.sealer.clone();
            self.scan(move |txn| notes::list(txn, owner, &query, &sealer))
                .await
        } else {
            self.read(|txn| notes::list(txn, owner, &query, &self.sealer))
        }
    }

    async fn usage(&self, owner: UserId) -> Result<(u64, u64)> {
        self.read(|txn| notes::usage(txn, owner))
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<()> {
        let key = self.audit_key;
        self.writer
            .write_unshed(move |txn| audit::append(txn, &key, &event).map(|_| ((), true)))
            .await
    }

    async fn audit_events(&self, query: AuditQuery) -> Result<(Vec<AuditRecord>, Option<u64>)> {
        self.scan(move |txn| audit::list(txn, &query)).await
    }

    async fn verify_audit(&self) -> Result<AuditVerdict> {
        let key = self.audit_key;
        self.scan(move |txn| audit::verify(txn, &key)).await
    }

    async fn purge_audit(&self, before: OffsetDateTime) -> Result<usize> {
        let key = self.audit_key;
        let mut removed = 0;
        loop {
            let gone = self
                .writer
                .write(move |txn| audit::purge(txn, &key, before, PURGE_BATCH).map(|n| (n, n > 0)))
                .await?;
            removed += gone;
            if gone < PURGE_BATCH {
                return Ok(removed);
            }
        }
    }

    async fn ping(&self) -> Result<()> {
        self.read(migrations::version).map(|_| ())
    }

    async fn record_counts(&self) -> Result<RecordCounts> {
        self.read(counts)
    }
}

#[cfg(test)]
mod tests;
