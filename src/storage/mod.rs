//! The storage seam: every record notesd keeps, and the named operations
//! the rest of the code asks of a backend ([`Storage`]). Nothing of a
//! backend leaks through it: records carry typed ids and no encoding,
//! errors are [`StorageError`], and no closure crosses it.
//!
//! redb ([`redb::RedbStorage`]) is the one backend. A second one
//! (PostgreSQL, say) implements the same trait; [`Backend`] then becomes
//! an enum that forwards to whichever was configured. The contract of each
//! operation says what it must guarantee under concurrent callers: redb
//! gets it from its single writer, a server database from a transaction
//! and the conditions named there.
//!
//! Durability is part of every write's contract: when a write's future
//! completes with `Ok`, the change is on disk (or on whatever the backend
//! calls durable), so an HTTP 2xx built on it survives a crash.

pub mod redb;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use time::OffsetDateTime;

use crate::audit::{Actor, AuditEvent, AuditQuery, AuditRecord, AuditVerdict};
use crate::domain::{InviteId, NoteId, Role, SessionId, UserId};

pub use self::redb::RedbStorage;

/// The backend this build serves from.
pub type Backend = RedbStorage;

/// An account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub id: UserId,
    /// The normalised email (see [`crate::domain::Email`]).
    pub email: String,
    /// Argon2id PHC string; the only form in which a password is kept.
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    pub created_at: OffsetDateTime,
}

/// What an account change by an admin (or the owner, for a deletion)
/// found. Only `Done` changed anything.
#[derive(Debug, PartialEq, Eq)]
pub enum AccountChange<T> {
    Done(T),
    NotFound,
    /// The change would leave no enabled admin.
    LastAdmin,
    /// The password hash is no longer the one that was verified.
    Stale,
}

/// A one-time signup code, stored as a hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InviteRecord {
    pub id: InviteId,
    /// BLAKE2b-256 of the code's secret.
    pub hash: [u8; 32],
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    pub created_by: Actor,
    pub used_by: Option<UserId>,
    pub used_at: Option<OffsetDateTime>,
}

/// A signup's use of an invite: taken only if the stored one has this
/// hash, is unused and has not expired at `at`.
#[derive(Debug, Clone)]
pub struct InviteClaim {
    pub id: InviteId,
    pub hash: [u8; 32],
    pub at: OffsetDateTime,
}

/// What [`Storage::create_account`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// Nothing written: the email has an account.
    EmailTaken,
    /// Nothing written: the invite is unknown, used or expired.
    InviteRefused,
}

/// A login session. It holds the hash of its current refresh token and of
/// a bounded number of rotated ones, so a replayed old token is recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub id: SessionId,
    pub user_id: UserId,
    /// BLAKE2b-256 of the current refresh secret.
    pub refresh_hash: [u8; 32],
    /// Hashes of rotated refresh secrets, newest last, bounded.
    pub previous_hashes: Vec<[u8; 32]>,
    pub created_at: OffsetDateTime,
    pub last_refreshed_at: OffsetDateTime,
    pub revoked_at: Option<OffsetDateTime>,
    /// Where the login that opened it came from, coarsely (an IPv4 /24 or
    /// an IPv6 /48, see [`crate::client::ClientKey::coarse`]), for the
    /// account's owner to recognise it.
    pub client: Option<String>,
    /// The `User-Agent` of that login, cleaned and shortened.
    pub user_agent: Option<String>,
    /// The login passed a second factor (its tokens say `amr: pwd otp`).
    pub second_factor: bool,
}

/// An account's second factor: a TOTP secret, pending until a first code
/// confirms it, and the hashes of its unused recovery codes.
#[derive(Clone, PartialEq, Eq)]
pub struct MfaRecord {
    pub user_id: UserId,
    /// The TOTP secret (20 random bytes).
    pub secret: Vec<u8>,
    /// A code has confirmed the enrolment: logins need a second step.
    pub confirmed: bool,
    /// The last TOTP time step accepted (0: none); a step is accepted once.
    pub last_step: u64,
    /// Keyed hashes of the recovery codes not used yet.
    pub recovery: Vec<[u8; 32]>,
    pub enrolled_at: OffsetDateTime,
}

/// Never shows the secret.
impl std::fmt::Debug for MfaRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaRecord")
            .field("user_id", &self.user_id)
            .field("confirmed", &self.confirmed)
            .field("last_step", &self.last_step)
            .field("recovery_left", &self.recovery.len())
            .finish_non_exhaustive()
    }
}

/// What proves the caller holds the factor, checked in the transaction
/// that applies an [`MfaChange`].
#[derive(Clone)]
pub enum MfaProof {
    /// Nothing (an enrolment, an admin's reset).
    None,
    /// A code matched this time step of this secret: accepted only if the
    /// secret is still the stored one and the step is later than the last
    /// one accepted.
    Step { step: u64, secret: Vec<u8> },
    /// A recovery code with this hash: accepted once.
    Recovery([u8; 32]),
}

/// A change to an account's second factor.
#[derive(Clone)]
pub enum MfaChange {
    /// A new pending enrolment, replacing a pending one; refused
    /// (`Conflict`) while a confirmed factor exists.
    Enrol(MfaRecord),
    /// The pending enrolment becomes the factor, with these recovery codes.
    Confirm(Vec<[u8; 32]>),
    /// The proof alone (a login's second step).
    Use,
    /// New recovery codes replace the old.
    NewRecoveryCodes(Vec<[u8; 32]>),
    /// The factor goes.
    Remove,
}

/// What [`Storage::change_mfa`] found. Only `Done` changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaOutcome {
    Done,
    /// No factor in the state the change needs (none, or only pending).
    NoFactor,
    /// A confirmed factor exists already (for `Enrol`).
    Conflict,
    /// The proof was refused: a step already used, a recovery code used
    /// or unknown, or a secret replaced meanwhile.
    Refused,
}

/// When sessions can no longer be used, for [`Storage::purge_sessions`].
#[derive(Debug, Clone, Copy)]
pub struct SessionCutoffs {
    /// A revoked session goes once it was revoked before this (its access
    /// tokens have all expired).
    pub revoked_before: OffsetDateTime,
    /// A live session goes once it was last refreshed before this (idle).
    pub refreshed_before: OffsetDateTime,
    /// ... or created before this (absolute life).
    pub created_before: OffsetDateTime,
}

impl SessionCutoffs {
    pub fn is_dead(&self, session: &SessionRecord) -> bool {
        match session.revoked_at {
            Some(at) => at < self.revoked_before,
            None => {
                session.last_refreshed_at <= self.refreshed_before
                    || session.created_at <= self.created_before
            }
        }
    }
}

/// A note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteRecord {
    pub id: NoteId,
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    /// Starts at 1, grows by one on every change; the ETag.
    pub version: u64,
}

impl NoteRecord {
    /// Bytes of text the note holds, as the byte quota counts them.
    pub fn text_bytes(&self) -> u64 {
        let tags: usize = self.tags.iter().map(String::len).sum();
        (self.title.len() + self.content.len() + tags) as u64
    }
}

#[cfg(test)]
impl NoteRecord {
    /// A note for tests, created at `at` and changed 0.123456789 s later.
    pub(crate) fn sample(
        title: &str,
        content: &str,
        tags: &[&str],
        at: OffsetDateTime,
        version: u64,
    ) -> Self {
        Self {
            id: NoteId::generate(),
            title: title.into(),
            content: content.into(),
            tags: tags.iter().map(|&t| t.to_owned()).collect(),
            created_at: at,
            updated_at: at + time::Duration::nanoseconds(123_456_789),
            version,
        }
    }
}

/// What one account may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub notes: u64,
    pub bytes: u64,
}

impl Quota {
    pub const UNLIMITED: Quota = Quota {
        notes: u64::MAX,
        bytes: u64::MAX,
    };
}

/// A change to a note, applied only if the version still matches.
#[derive(Debug, Clone)]
pub struct NoteUpdate {
    pub title: Option<String>,
    pub content: Option<String>,
    pub tags: Option<Vec<String>>,
    /// `Some(vs)`: refuse unless the stored version is one of `vs`
    /// (`If-Match`).
    pub expected_version: Option<Vec<u64>>,
    pub now: OffsetDateTime,
}

/// What a conditional write found. Only `Done` changed anything.
#[derive(Debug, PartialEq, Eq)]
pub enum Conditional<T> {
    Done(T),
    NotFound,
    VersionMismatch,
    /// The write would take the owner past its quota.
    OverQuota,
}

/// What a note costs on a page (the caller's serialised size), as plain
/// functions of the note.
#[derive(Clone, Copy)]
pub struct Weigh {
    pub exact: fn(&NoteView<'_>) -> usize,
    /// Never less than `exact`, and cheaper: while the bounds of a page's
    /// notes fit its budget, their exact weights are never needed.
    pub bound: fn(&NoteView<'_>) -> usize,
}

/// One page of a listing, newest first.
#[derive(Clone)]
pub struct NoteQuery {
    pub limit: usize,
    /// The page ends before the note that would take the summed
    /// `weigh.exact(note)` past this (a page always has at least one note).
    pub max_bytes: usize,
    /// What one note costs on the page, which the backend applies to each
    /// note it reads, so a page of huge notes never sits whole in memory.
    pub weigh: Weigh,
    /// Continue after this note (exclusive), as returned in `next_cursor`.
    pub after: Option<NoteId>,
    pub tag: Option<String>,
    /// Lower-cased substring to look for in title and content.
    pub q: Option<String>,
    /// With `q`: read at most this many notes, then return what matched so
    /// far with a cursor to continue (a search's cost stays bounded).
    pub scan_limit: usize,
    /// With `q`: also stop once this many bytes of text have been read.
    pub scan_bytes: usize,
    /// Set when the request went away: a search stops at the next note.
    pub cancelled: Option<Arc<AtomicBool>>,
}

impl NoteQuery {
    /// The first `limit` notes, newest first: no filter, no byte budget,
    /// a search budget of 1000 notes.
    pub fn first(limit: usize) -> Self {
        Self {
            limit,
            max_bytes: usize::MAX,
            weigh: Weigh {
                exact: |_| 1,
                bound: |_| 1,
            },
            after: None,
            tag: None,
            q: None,
            scan_limit: 1000,
            scan_bytes: usize::MAX,
            cancelled: None,
        }
    }
}

/// A page of notes and the cursor of the next page, if any.
pub type NotePage = (NoteList, Option<NoteId>);

/// Notes read for a page, their text held in one buffer: as records, a
/// page of 50 notes cost some 200 allocations and as many frees, a sixth
/// of its time.
#[derive(Debug, Default)]
pub struct NoteList {
    /// Every title, content and tag, one after the other.
    text: String,
    /// Where each tag is in `text`.
    tags: Vec<(usize, usize)>,
    notes: Vec<Listed>,
}

#[derive(Debug)]
struct Listed {
    id: NoteId,
    title: (usize, usize),
    content: (usize, usize),
    /// Where the note's tags are in `tags`.
    tags: (usize, usize),
    created_at: OffsetDateTime,
    updated_at: OffsetDateTime,
    version: u64,
}

/// A note of a [`NoteList`], borrowed from it.
#[derive(Debug, Clone, Copy)]
pub struct NoteView<'a> {
    pub id: NoteId,
    pub title: &'a str,
    pub content: &'a str,
    tags: &'a [(usize, usize)],
    text: &'a str,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

impl<'a> NoteView<'a> {
    pub fn tags(&self) -> impl Iterator<Item = &'a str> + Clone + use<'a> {
        let text = self.text;
        self.tags
            .iter()
            .map(move |&(start, end)| text.get(start..end).unwrap_or_default())
    }

    pub fn to_record(&self) -> NoteRecord {
        NoteRecord {
            id: self.id,
            title: self.title.to_owned(),
            content: self.content.to_owned(),
            tags: self.tags().map(str::to_owned).collect(),
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        }
    }
}

impl NoteList {
    pub fn with_capacity(notes: usize) -> Self {
        Self {
            text: String::new(),
            tags: Vec::new(),
            notes: Vec::with_capacity(notes),
        }
    }

    pub fn len(&self) -> usize {
        self.notes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.notes.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<NoteView<'_>> {
        let note = self.notes.get(i)?;
        let slice = |(start, end): (usize, usize)| self.text.get(start..end).unwrap_or_default();
        Some(NoteView {
            id: note.id,
            title: slice(note.title),
            content: slice(note.content),
            tags: self.tags.get(note.tags.0..note.tags.1).unwrap_or_default(),
            text: &self.text,
            created_at: note.created_at,
            updated_at: note.updated_at,
            version: note.version,
        })
    }

    pub fn last(&self) -> Option<NoteView<'_>> {
        self.get(self.notes.len().checked_sub(1)?)
    }

    pub fn iter(&self) -> impl Iterator<Item = NoteView<'_>> {
        (0..self.notes.len()).filter_map(|i| self.get(i))
    }

    /// The notes as records (for tests and tools; a page is read as views).
    pub fn records(&self) -> Vec<NoteRecord> {
        self.iter().map(|n| n.to_record()).collect()
    }

    /// Adds a note at the end.
    pub fn push(&mut self, note: &NoteRecord) {
        let mut text = self.text_writer();
        let title = text.push(&note.title);
        let content = text.push(&note.content);
        for tag in &note.tags {
            text.push_tag(tag);
        }
        text.finish(
            note.id,
            title,
            content,
            (note.created_at, note.updated_at, note.version),
        );
    }

    /// Appends a note's texts one by one; [`TextWriter::finish`] adds the
    /// note (dropped before, the texts are left unused at the end).
    pub(crate) fn text_writer(&mut self) -> TextWriter<'_> {
        let tags_start = self.tags.len();
        TextWriter {
            list: self,
            tags_start,
        }
    }

    /// Room for `bytes` more of text.
    pub fn reserve_text(&mut self, bytes: usize) {
        self.text.reserve(bytes);
    }

    /// Removes the last note and its text.
    pub fn pop(&mut self) {
        if let Some(note) = self.notes.pop() {
            self.text.truncate(note.title.0);
            self.tags.truncate(note.tags.0);
        }
    }

    pub fn truncate(&mut self, len: usize) {
        while self.notes.len() > len {
            self.pop();
        }
    }
}

/// Writes one note's text into a [`NoteList`].
pub(crate) struct TextWriter<'l> {
    list: &'l mut NoteList,
    tags_start: usize,
}

impl TextWriter<'_> {
    pub(crate) fn push(&mut self, s: &str) -> (usize, usize) {
        let start = self.list.text.len();
        self.list.text.push_str(s);
        (start, self.list.text.len())
    }

    pub(crate) fn push_tag(&mut self, tag: &str) {
        let span = self.push(tag);
        self.list.tags.push(span);
    }

    pub(crate) fn finish(
        self,
        id: NoteId,
        title: (usize, usize),
        content: (usize, usize),
        (created_at, updated_at, version): (OffsetDateTime, OffsetDateTime, u64),
    ) {
        let tags = (self.tags_start, self.list.tags.len());
        self.list.notes.push(Listed {
            id,
            title,
            content,
            tags,
            created_at,
            updated_at,
            version,
        });
    }
}

/// A failed-login counter (see `auth::backoff`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffRecord {
    /// Failures since the last success (or since the count went stale).
    pub failures: u32,
    pub last_failure: OffsetDateTime,
    /// No login attempt is examined before this instant.
    pub until: OffsetDateTime,
}

/// Whose counter: an existing account's, or an email's with no account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterOf {
    Account,
    /// An email with no account; at most `cap` such counters are stored.
    Ghost {
        cap: u64,
    },
}

/// How a known client is identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownKind {
    /// `id` is the BLAKE2b-256 hash of a device token.
    Device,
    /// `id` holds a client key (see `client::ClientKey::to_bytes`).
    Address,
}

/// A client an account has logged in from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownClient {
    pub kind: KnownKind,
    pub id: [u8; 32],
    pub last_seen: OffsetDateTime,
    /// A device that has presented its token at a login (not only been
    /// given one).
    pub proven: bool,
}

/// Devices remembered per account.
pub const DEVICES_MAX: usize = 32;
/// Addresses remembered per account.
pub const ADDRESSES_MAX: usize = 16;

/// How many records of each kind a database holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RecordCounts {
    pub users: u64,
    pub sessions: u64,
    pub notes: u64,
    pub tag_entries: u64,
    pub login_counters: u64,
    pub ghost_counters: u64,
    pub known_client_lists: u64,
    pub audit_records: u64,
}

/// What a storage operation can fail with. The API answers every one of
/// them with a generic problem; the detail goes to the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// The write queue is full: try again shortly (HTTP 503).
    #[error("the write queue is full")]
    Busy,
    /// The database was written by a newer notesd.
    #[error(
        "the database has schema version {found}, newer than this notesd understands ({understood}); upgrade notesd"
    )]
    NewerSchema { found: u64, understood: u64 },
    /// The key ring's data key does not open this database's values.
    #[error(
        "the key ring does not open this database: keyring.json is not the one written with this database file"
    )]
    WrongKey,
    /// Another process holds the database open.
    #[error("the database is in use by another process (is notesd already running?)")]
    Locked,
    /// A stored record does not decode: a bug or a damaged file.
    #[error("corrupt record in table {table}: {detail}")]
    Corrupt { table: String, detail: String },
    /// The writer or a reading pool has stopped (shutting down, or a bug).
    #[error("storage stopped: {0}")]
    Stopped(&'static str),
    /// The disk is full or failing; the store recovers by itself when it
    /// can (HTTP 503).
    #[error("storage unavailable: {0}")]
    Unavailable(Arc<dyn std::error::Error + Send + Sync>),
    /// The backend failed otherwise (a bug, damage).
    #[error("storage failure: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// The operations notesd asks of its storage. Reads are answered from a
/// consistent snapshot; every write is atomic (all of it or none of it)
/// and durable once its future completes with `Ok`. A write that takes
/// [`AuditEvent`]s appends them to the audit log in the same transaction
/// when it changes anything (a backend chains each to the one before, see
/// [`crate::audit`]), so the log holds exactly the changes that happened. Under load a write
/// may be refused at once with [`StorageError::Busy`] (having written
/// nothing), except where its contract says otherwise. A write that was
/// accepted is carried out even if its caller stops waiting.
pub trait Storage: Send + Sync + 'static {
    // Accounts.

    /// Creates an account, its first session (signup; none when an admin
    /// or the command line makes it) and its known clients, and marks the
    /// invite used, all or nothing. Writes nothing when the email is taken
    /// or the invite cannot be claimed. Uniqueness of the email holds
    /// under concurrent calls: of two signups racing on one email exactly
    /// one is `Created` (a server database: a unique index on the email,
    /// the insert in the same transaction as the user row); so does the
    /// single use of an invite (`UPDATE invites SET used_by = $1 WHERE id
    /// = $2 AND used_by IS NULL`).
    fn create_account(
        &self,
        user: UserRecord,
        session: Option<SessionRecord>,
        seen: Vec<KnownClient>,
        invite: Option<InviteClaim>,
        events: Vec<AuditEvent>,
    ) -> impl Future<Output = Result<Created>> + Send;

    /// Deletes the account: its user row and email (free again), notes,
    /// tags, usage, known clients and login counters, in one transaction;
    /// its sessions are ended (kept, revoked, until the purge, so their
    /// tokens stay refused after a restart). With `verified`, only if the
    /// stored hash is still that one. Refused for the last enabled admin.
    /// Returns the sessions it ended. Never refused for load.
    fn delete_account(
        &self,
        user: UserId,
        verified: Option<String>,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AccountChange<Vec<SessionId>>>> + Send;

    /// Sets the account's role; demoting the last enabled admin is
    /// refused. Returns the account as changed.
    fn set_role(
        &self,
        user: UserId,
        role: Role,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AccountChange<UserRecord>>> + Send;

    /// Disables (ending every session, returned) or enables the account;
    /// disabling the last enabled admin is refused.
    fn set_disabled(
        &self,
        user: UserId,
        disabled: bool,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AccountChange<Vec<SessionId>>>> + Send;

    /// Sets a new password hash and ends every session of the account
    /// (returned): a reset follows a lost or stolen password.
    fn reset_password(
        &self,
        user: UserId,
        hash: String,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AccountChange<Vec<SessionId>>>> + Send;

    /// Ends every session of the account; returns those it ended.
    fn end_user_sessions(
        &self,
        user: UserId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AccountChange<Vec<SessionId>>>> + Send;

    /// Accounts whose email starts with `prefix`, by email, after `after`
    /// (exclusive); and the cursor of the next page.
    fn users_page(
        &self,
        prefix: String,
        after: Option<String>,
        limit: usize,
    ) -> impl Future<Output = Result<(Vec<UserRecord>, Option<String>)>> + Send;

    // Invites.

    fn create_invite(
        &self,
        invite: InviteRecord,
        event: AuditEvent,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Invites, newest first, at most `limit`.
    fn invites(&self, limit: usize) -> impl Future<Output = Result<Vec<InviteRecord>>> + Send;

    fn invite(&self, id: InviteId) -> impl Future<Output = Result<Option<InviteRecord>>> + Send;

    /// Deletes an invite (used or not); `false` if there is none.
    fn delete_invite(&self, id: InviteId, event: AuditEvent) -> impl Future<Output = Result<bool>> + Send;

    fn user(&self, id: UserId) -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// The account with this normalised email.
    fn user_by_email(&self, email: &str) -> impl Future<Output = Result<Option<UserRecord>>> + Send;

    /// Replaces a user's password hash if it is still `expected` (a
    /// rehash must not undo a reset that came meanwhile); `false` if not.
    fn set_password_hash(
        &self,
        id: UserId,
        expected: String,
        hash: String,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Replaces the user's password hash and ends every other session of
    /// the account (as [`Storage::end_other_sessions`]), in one
    /// transaction, returning the sessions it ended. `NotFound` (nothing
    /// changed) if there is no such user or `keep` is no longer a live
    /// session of it: of two sessions changing the password at once, the
    /// one whose session the other ended fails. Compare-and-set on the
    /// hash as well: `Stale` (nothing changed) unless the stored hash is
    /// still `verified`, the one the current password was checked
    /// against. Never refused for load.
    fn change_password(
        &self,
        user: UserId,
        verified: String,
        hash: String,
        keep: SessionId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<AccountChange<Vec<SessionId>>>> + Send;

    // Sessions and known clients.

    /// Stores a new session and adds or refreshes `seen` in the account's
    /// known clients (each kind bounded, proven devices kept first), in one
    /// transaction, but only if the account still exists, is enabled and
    /// still has the password hash `verified` that the login checked:
    /// `false` (nothing written) if not. So a login in flight while an
    /// admin disables, deletes or resets the account, or the owner changes
    /// the password, opens no session.
    fn create_session(
        &self,
        session: SessionRecord,
        seen: Vec<KnownClient>,
        verified: String,
        event: AuditEvent,
    ) -> impl Future<Output = Result<bool>> + Send;

    fn session(&self, id: SessionId) -> impl Future<Output = Result<Option<SessionRecord>>> + Send;

    /// Compare-and-set: stores `next` only if the stored session is still
    /// exactly `current`, and returns whether it did. Two refreshes racing
    /// on one token both read the same `current`; only one can replace it,
    /// and the other, reading again, sees a rotated token (reuse detection
    /// rests on this). A server database: `UPDATE ... WHERE` every field
    /// of `current`, or a row version. Never refused for load
    /// ([`StorageError::Busy`]): it may end a session (reuse detected), so
    /// it waits for the writer instead.
    fn replace_session(
        &self,
        current: SessionRecord,
        next: SessionRecord,
        event: Option<AuditEvent>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Marks a session of `user` revoked at `at` unless it already is;
    /// `false` if `user` has no such session or it was revoked before (a
    /// session of another account is left alone). Never refused for load:
    /// a logout under a write flood must still end the session.
    fn revoke_session(
        &self,
        user: UserId,
        id: SessionId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Ends every session of `user` but `keep` that is not ended yet, at
    /// `at`, in one transaction; returns the ids it ended, or `None` (and
    /// changes nothing) if `keep` is not a live session of `user` when the
    /// transaction runs. Never refused for load (a user ending a thief's
    /// sessions must not get a 503). A server database: the check of
    /// `keep` with `SELECT … FOR UPDATE`, then one `UPDATE … WHERE user_id
    /// = $1 AND id <> $2 AND revoked_at IS NULL RETURNING id`.
    fn end_other_sessions(
        &self,
        user: UserId,
        keep: SessionId,
        at: OffsetDateTime,
        event: AuditEvent,
    ) -> impl Future<Output = Result<Option<Vec<SessionId>>>> + Send;

    /// The live sessions of `user` (not ended, not dead by `cutoffs`),
    /// newest first, `limit` at most, after `after` (exclusive); and the
    /// cursor of the next page.
    fn sessions_of(
        &self,
        user: UserId,
        after: Option<SessionId>,
        limit: usize,
        cutoffs: SessionCutoffs,
    ) -> impl Future<Output = Result<(Vec<SessionRecord>, Option<SessionId>)>> + Send;

    /// Sessions stored, live and ended ones not yet purged.
    fn session_count(&self) -> impl Future<Output = Result<u64>> + Send;

    /// Ids of sessions revoked at or after `since` (their access tokens may
    /// still be unexpired).
    fn sessions_revoked_since(
        &self,
        since: OffsetDateTime,
    ) -> impl Future<Output = Result<Vec<SessionId>>> + Send;

    /// Deletes sessions dead by `cutoffs`, in small batches so no writer
    /// is held for a whole scan. A session refreshed meanwhile is kept
    /// (each is checked again when removed). Returns how many went.
    fn purge_sessions(&self, cutoffs: SessionCutoffs) -> impl Future<Output = Result<usize>> + Send;

    /// The account's second factor, confirmed or pending.
    fn mfa(&self, user: UserId) -> impl Future<Output = Result<Option<MfaRecord>>> + Send;

    /// Checks `proof` and applies `change` in one transaction, with
    /// `events` stored when it is done: concurrent uses of one code or one
    /// recovery code find exactly one `Done`.
    fn change_mfa(
        &self,
        user: UserId,
        proof: MfaProof,
        change: MfaChange,
        events: Vec<AuditEvent>,
    ) -> impl Future<Output = Result<MfaOutcome>> + Send;

    fn known_clients(&self, user: UserId) -> impl Future<Output = Result<Vec<KnownClient>>> + Send;

    // Failed-login counters.

    fn login_counter(
        &self,
        key: &str,
        of: CounterOf,
    ) -> impl Future<Output = Result<Option<BackoffRecord>>> + Send;

    /// Stores a counter as it stands after a failure, and `events` (which
    /// are stored even when the counter is not). A new ghost counter past
    /// its cap is not stored (`false`); the cap holds under concurrent
    /// calls.
    fn record_failure(
        &self,
        key: String,
        counter: BackoffRecord,
        of: CounterOf,
        events: Vec<AuditEvent>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Forgets an account's counter (after a successful login).
    fn clear_failures(&self, key: String) -> impl Future<Output = Result<()>> + Send;

    /// Drops counters whose last failure is older than `before`, in small
    /// batches; one refreshed meanwhile is kept.
    fn purge_counters(&self, before: OffsetDateTime) -> impl Future<Output = Result<usize>> + Send;

    // Notes. Every note operation names its owner: one account's call can
    // never reach another account's note.

    /// Stores a new note if the owner's quota has room for it and the
    /// owner's account still exists (`NotFound` if it was deleted while
    /// the request ran). The quota holds under concurrent creates (the
    /// usage is read and charged in the transaction that writes the note).
    fn create_note(
        &self,
        owner: UserId,
        note: NoteRecord,
        quota: Quota,
    ) -> impl Future<Output = Result<Conditional<()>>> + Send;

    /// Stores many notes in one transaction (bulk import, benchmarks),
    /// counted in the owner's usage but not held to a quota.
    fn import_notes(&self, owner: UserId, notes: Vec<NoteRecord>) -> impl Future<Output = Result<()>> + Send;

    fn note(&self, owner: UserId, id: NoteId) -> impl Future<Output = Result<Option<NoteRecord>>> + Send;

    /// Applies `update` to the owner's note if it exists and, when asked,
    /// only if its version still matches: compare-and-set on the version,
    /// which grows by one per change, so of two writers sending one
    /// `If-Match` exactly one wins. Also held to the quota.
    fn update_note(
        &self,
        owner: UserId,
        id: NoteId,
        update: NoteUpdate,
        quota: Quota,
    ) -> impl Future<Output = Result<Conditional<NoteRecord>>> + Send;

    /// Deletes the owner's note, under the same version condition.
    fn delete_note(
        &self,
        owner: UserId,
        id: NoteId,
        expected_version: Option<Vec<u64>>,
    ) -> impl Future<Output = Result<Conditional<()>>> + Send;

    /// One page of the owner's notes, newest first. Without `q` the cost
    /// follows the page size, not the collection; with `q` it is bounded by
    /// the query's scan budget and must not hold up short reads.
    fn list_notes(&self, owner: UserId, query: NoteQuery) -> impl Future<Output = Result<NotePage>> + Send;

    /// Notes and bytes of text the owner holds.
    fn usage(&self, owner: UserId) -> impl Future<Output = Result<(u64, u64)>> + Send;

    // The audit log.

    /// Appends an event that goes with no other change (a key rotation).
    fn append_audit(&self, event: AuditEvent) -> impl Future<Output = Result<()>> + Send;

    /// A page of stored events, newest first, and the cursor of the next.
    fn audit_events(
        &self,
        query: AuditQuery,
    ) -> impl Future<Output = Result<(Vec<AuditRecord>, Option<u64>)>> + Send;

    /// Checks the whole chain (a long read).
    fn verify_audit(&self) -> impl Future<Output = Result<AuditVerdict>> + Send;

    /// Drops events older than `before`, oldest first, in small batches.
    fn purge_audit(&self, before: OffsetDateTime) -> impl Future<Output = Result<usize>> + Send;

    // Operations.

    /// A cheap round trip, for readiness.
    fn ping(&self) -> impl Future<Output = Result<()>> + Send;

    /// How many records of each kind are stored.
    fn record_counts(&self) -> impl Future<Output = Result<RecordCounts>> + Send;
}

/// How the rest of notesd holds its storage.
pub type Db = Arc<Backend>;
