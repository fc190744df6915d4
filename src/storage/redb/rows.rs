//! How records are laid out in redb: postcard (a compact serde binary
//! format) of these rows, which keep the field order and types of schema
//! version 3. The rest of notesd sees only the records of
//! [`crate::storage`]; a change of layout is a new schema version with its
//! migration step.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

use crate::audit::Actor;
use crate::domain::{InviteId, NoteId, Role, SessionId, UserId};
use crate::storage::{
    BackoffRecord, InviteRecord, KnownClient, KnownKind, NoteRecord, Result, SessionRecord, StorageError,
    UserRecord,
};
use redb::TableHandle;

/// Decodes a row of `table`; a row that does not decode is corrupt.
pub fn decode<T: DeserializeOwned>(table: &impl TableHandle, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(table, &e))
}

pub fn encode<T: Serialize>(table: &impl TableHandle, value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| corrupt(table, &e))
}

fn corrupt(table: &impl TableHandle, err: &postcard::Error) -> StorageError {
    StorageError::Corrupt {
        table: table.name().to_owned(),
        detail: err.to_string(),
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRow {
    pub id: u128,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
}

impl From<UserRow> for UserRecord {
    fn from(row: UserRow) -> Self {
        Self {
            id: UserId::from_u128(row.id),
            email: row.email,
            password_hash: row.password_hash,
            role: row.role,
            disabled: row.disabled,
            created_at: row.created_at,
        }
    }
}

impl From<&UserRecord> for UserRow {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.as_u128(),
            email: user.email.clone(),
            password_hash: user.password_hash.clone(),
            role: user.role,
            disabled: user.disabled,
            created_at: user.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionRow {
    pub id: u128,
    pub user_id: u128,
    pub refresh_hash: [u8; 32],
    pub previous_hashes: Vec<[u8; 32]>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_refreshed_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds::option")]
    pub revoked_at: Option<OffsetDateTime>,
    pub client: Option<String>,
    pub user_agent: Option<String>,
}

/// A session as schema 2 stored it (no client, no user agent).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionRowV2 {
    pub id: u128,
    pub user_id: u128,
    pub refresh_hash: [u8; 32],
    pub previous_hashes: Vec<[u8; 32]>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_refreshed_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

impl From<SessionRowV2> for SessionRow {
    fn from(old: SessionRowV2) -> Self {
        Self {
            id: old.id,
            user_id: old.user_id,
            refresh_hash: old.refresh_hash,
            previous_hashes: old.previous_hashes,
            created_at: old.created_at,
            last_refreshed_at: old.last_refreshed_at,
            revoked_at: old.revoked_at,
            client: None,
            user_agent: None,
        }
    }
}

impl From<SessionRow> for SessionRecord {
    fn from(row: SessionRow) -> Self {
        Self {
            id: SessionId::from_u128(row.id),
            user_id: UserId::from_u128(row.user_id),
            refresh_hash: row.refresh_hash,
            previous_hashes: row.previous_hashes,
            created_at: row.created_at,
            last_refreshed_at: row.last_refreshed_at,
            revoked_at: row.revoked_at,
            client: row.client,
            user_agent: row.user_agent,
        }
    }
}

impl From<&SessionRecord> for SessionRow {
    fn from(session: &SessionRecord) -> Self {
        Self {
            id: session.id.as_u128(),
            user_id: session.user_id.as_u128(),
            refresh_hash: session.refresh_hash,
            previous_hashes: session.previous_hashes.clone(),
            created_at: session.created_at,
            last_refreshed_at: session.last_refreshed_at,
            revoked_at: session.revoked_at,
            client: session.client.clone(),
            user_agent: session.user_agent.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoteRow {
    pub id: u128,
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

impl From<NoteRow> for NoteRecord {
    fn from(row: NoteRow) -> Self {
        Self {
            id: NoteId::from_u128(row.id),
            title: row.title,
            content: row.content,
            tags: row.tags,
            created_at: row.created_at,
            updated_at: row.updated_at,
            version: row.version,
        }
    }
}

/// A note as written: borrowed, so a write does not copy the text.
#[derive(Serialize)]
pub struct NoteRowRef<'a> {
    pub id: u128,
    pub title: &'a str,
    pub content: &'a str,
    pub tags: &'a [String],
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

impl<'a> From<&'a NoteRecord> for NoteRowRef<'a> {
    fn from(note: &'a NoteRecord) -> Self {
        Self {
            id: note.id.as_u128(),
            title: &note.title,
            content: &note.content,
            tags: &note.tags,
            created_at: note.created_at,
            updated_at: note.updated_at,
            version: note.version,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BackoffRow {
    pub failures: u32,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_failure: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub until: OffsetDateTime,
}

impl From<BackoffRow> for BackoffRecord {
    fn from(row: BackoffRow) -> Self {
        Self {
            failures: row.failures,
            last_failure: row.last_failure,
            until: row.until,
        }
    }
}

impl From<&BackoffRecord> for BackoffRow {
    fn from(record: &BackoffRecord) -> Self {
        Self {
            failures: record.failures,
            last_failure: record.last_failure,
            until: record.until,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum KnownKindRow {
    Device,
    Address,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownRow {
    pub kind: KnownKindRow,
    pub id: [u8; 32],
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub last_seen: OffsetDateTime,
    pub proven: bool,
}

impl From<KnownRow> for KnownClient {
    fn from(row: KnownRow) -> Self {
        Self {
            kind: match row.kind {
                KnownKindRow::Device => KnownKind::Device,
                KnownKindRow::Address => KnownKind::Address,
            },
            id: row.id,
            last_seen: row.last_seen,
            proven: row.proven,
        }
    }
}

impl From<&KnownClient> for KnownRow {
    fn from(client: &KnownClient) -> Self {
        Self {
            kind: match client.kind {
                KnownKind::Device => KnownKindRow::Device,
                KnownKind::Address => KnownKindRow::Address,
            },
            id: client.id,
            last_seen: client.last_seen,
            proven: client.proven,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InviteRow {
    pub id: u128,
    pub hash: [u8; 32],
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub expires_at: OffsetDateTime,
    /// The admin who made it; `None`: the command line.
    pub created_by: Option<u128>,
    pub used_by: Option<u128>,
    #[serde(with = "time::serde::timestamp::nanoseconds::option")]
    pub used_at: Option<OffsetDateTime>,
}

impl From<InviteRow> for InviteRecord {
    fn from(row: InviteRow) -> Self {
        Self {
            id: InviteId::from_u128(row.id),
            hash: row.hash,
            created_at: row.created_at,
            expires_at: row.expires_at,
            created_by: row
                .created_by
                .map_or(Actor::Operator, |id| Actor::Admin(UserId::from_u128(id))),
            used_by: row.used_by.map(UserId::from_u128),
            used_at: row.used_at,
        }
    }
}

impl From<&InviteRecord> for InviteRow {
    fn from(invite: &InviteRecord) -> Self {
        Self {
            id: invite.id.as_u128(),
            hash: invite.hash,
            created_at: invite.created_at,
            expires_at: invite.expires_at,
            created_by: match invite.created_by {
                Actor::Admin(id) => Some(id.as_u128()),
                Actor::Operator => None,
            },
            used_by: invite.used_by.map(UserId::as_u128),
            used_at: invite.used_at,
        }
    }
}
