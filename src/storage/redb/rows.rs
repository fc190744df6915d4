//! How records are laid out in redb: postcard (a compact serde binary
//! format) of these rows, which keep the field order and types of schema
//! version 4. The rest of notesd sees only the records of
//! [`crate::storage`]; a change of layout is a new schema version with its
//! migration step. Since version 4 the text of a note (title, content,
//! tags) and an account's email and password hash are sealed (see
//! [`crate::seal`]); the rows of version 3 stay here for the migration.

use serde::{Deserialize, Serialize, de::DeserializeOwned};
use time::OffsetDateTime;

use super::tables::{OWNER_NOTE_TO_RECORD, USER_TO_MFA, USER_TO_RECORD};
use crate::audit::Actor;
use crate::domain::{InviteId, NoteId, Role, SessionId, UserId};
use crate::seal::{Field, Opener, SealError, Sealer};
use crate::storage::{
    BackoffRecord, InviteRecord, KnownClient, KnownKind, MfaRecord, NoteList, NoteRecord, Result,
    SessionRecord, StorageError, TextWriter, UserRecord,
};
use redb::TableHandle;

/// Decodes a row of `table`; a row that does not decode is corrupt.
pub fn decode<T: DeserializeOwned>(table: &impl TableHandle, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes).map_err(|e| corrupt(table, &e))
}

/// As [`decode`], borrowing from `bytes`.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(table: &impl TableHandle, bytes: &'a [u8]) -> Result<T> {
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

fn sealing_failed(table: &impl TableHandle, err: &SealError) -> StorageError {
    StorageError::Corrupt {
        table: table.name().to_owned(),
        detail: err.to_string(),
    }
}

/// Seals `plain` as `field` of a row of `table`.
fn seal_in(
    table: &impl TableHandle,
    sealer: &Sealer,
    field: Field,
    (owner, row): (u128, u128),
    plain: &[u8],
) -> Result<Vec<u8>> {
    sealer
        .seal(field, owner, row, plain)
        .map_err(|e| sealing_failed(table, &e))
}

/// Opens `field` of a row of `table`.
fn open_in(
    table: &impl TableHandle,
    sealer: &Sealer,
    field: Field,
    (owner, row): (u128, u128),
    value: &[u8],
) -> Result<Vec<u8>> {
    sealer
        .open(field, owner, row, value)
        .map_err(|e| sealing_failed(table, &e))
}

/// An account as schema 4 stores it: the email and password hash sealed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRow {
    pub id: u128,
    /// An [`AccountSecrets`], sealed.
    pub sealed: Vec<u8>,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
pub struct AccountSecrets {
    pub email: String,
    pub password_hash: String,
}

/// The account row stored under `id`; one that names another id (moved
/// or copied from another row) is corrupt.
pub fn user_row(
    table: &(impl redb::ReadableTable<u128, &'static [u8]> + TableHandle),
    id: u128,
) -> Result<Option<UserRow>> {
    let Some(guard) = table.get(id)? else {
        return Ok(None);
    };
    let row: UserRow = decode(table, guard.value())?;
    if row.id != id {
        return Err(misplaced(table));
    }
    Ok(Some(row))
}

fn misplaced(table: &impl TableHandle) -> StorageError {
    StorageError::Corrupt {
        table: table.name().to_owned(),
        detail: "a row stored under another key than its own".to_owned(),
    }
}

impl UserRow {
    pub fn seal(user: &UserRecord, sealer: &Sealer) -> Result<Self> {
        let id = user.id.as_u128();
        let secrets = AccountSecretsRef {
            email: &user.email,
            password_hash: &user.password_hash,
        };
        let plain = encode(&USER_TO_RECORD, &secrets)?;
        Ok(Self {
            id,
            sealed: seal_in(&USER_TO_RECORD, sealer, Field::Account, (id, id), &plain)?,
            role: user.role,
            disabled: user.disabled,
            created_at: user.created_at,
        })
    }

    pub fn secrets(&self, sealer: &Sealer) -> Result<AccountSecrets> {
        let plain = open_in(
            &USER_TO_RECORD,
            sealer,
            Field::Account,
            (self.id, self.id),
            &self.sealed,
        )?;
        decode(&USER_TO_RECORD, &plain)
    }

    pub fn open(self, sealer: &Sealer) -> Result<UserRecord> {
        let secrets = self.secrets(sealer)?;
        Ok(UserRecord {
            id: UserId::from_u128(self.id),
            email: secrets.email,
            password_hash: secrets.password_hash,
            role: self.role,
            disabled: self.disabled,
            created_at: self.created_at,
        })
    }

    /// Replaces the sealed password hash.
    pub fn set_password_hash(&mut self, sealer: &Sealer, hash: &str) -> Result<()> {
        let mut user = self.clone().open(sealer)?;
        hash.clone_into(&mut user.password_hash);
        *self = Self::seal(&user, sealer)?;
        Ok(())
    }
}

#[derive(Serialize)]
struct AccountSecretsRef<'a> {
    email: &'a str,
    password_hash: &'a str,
}

/// An account as schemas 1 to 3 stored it, in plain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRowV3 {
    pub id: u128,
    pub email: String,
    pub password_hash: String,
    pub role: Role,
    pub disabled: bool,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
}

impl From<UserRowV3> for UserRecord {
    fn from(row: UserRowV3) -> Self {
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

/// An account's second factor: secret and recovery-code hashes sealed
/// together (an [`MfaSecrets`]), bound to the account.
#[derive(Serialize, Deserialize)]
pub struct MfaRow {
    pub user_id: u128,
    pub sealed: Vec<u8>,
    pub confirmed: bool,
    pub last_step: u64,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub enrolled_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct MfaSecrets {
    secret: Vec<u8>,
    recovery: Vec<[u8; 32]>,
}

impl MfaRow {
    pub fn seal(record: &MfaRecord, sealer: &Sealer) -> Result<Self> {
        let id = record.user_id.as_u128();
        let secrets = MfaSecrets {
            secret: record.secret.clone(),
            recovery: record.recovery.clone(),
        };
        let plain = encode(&USER_TO_MFA, &secrets)?;
        Ok(Self {
            user_id: id,
            sealed: seal_in(&USER_TO_MFA, sealer, Field::Mfa, (id, id), &plain)?,
            confirmed: record.confirmed,
            last_step: record.last_step,
            enrolled_at: record.enrolled_at,
        })
    }

    /// The row stored under `id` opened; one stored under another id does
    /// not open (the sealed part is bound to its account).
    pub fn open(self, id: u128, sealer: &Sealer) -> Result<MfaRecord> {
        let plain = open_in(&USER_TO_MFA, sealer, Field::Mfa, (id, id), &self.sealed)?;
        let secrets: MfaSecrets = decode(&USER_TO_MFA, &plain)?;
        Ok(MfaRecord {
            user_id: UserId::from_u128(id),
            secret: secrets.secret,
            confirmed: self.confirmed,
            last_step: self.last_step,
            recovery: secrets.recovery,
            enrolled_at: self.enrolled_at,
        })
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
            second_factor: false,
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

/// A note as schema 4 stores it: title, content and tags sealed together
/// (a [`NoteBody`]), bound to the owner and the note.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoteRow {
    pub id: u128,
    pub sealed: Vec<u8>,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

#[derive(Deserialize)]
struct NoteBody {
    title: String,
    content: String,
    tags: Vec<String>,
}

#[derive(Serialize)]
struct NoteBodyRef<'a> {
    title: &'a str,
    content: &'a str,
    tags: &'a [String],
}

/// A stored note read in place: the sealed body borrowed from the page.
#[derive(Deserialize)]
pub struct NoteRowView<'a> {
    pub id: u128,
    #[serde(borrow)]
    pub sealed: &'a [u8],
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::timestamp::nanoseconds")]
    pub updated_at: OffsetDateTime,
    pub version: u64,
}

impl NoteRowView<'_> {
    /// Opens the row stored under (`opener`'s owner, `id`), decrypting
    /// into `plain`: the rows of a page share one buffer.
    pub fn open(&self, id: u128, opener: &Opener, plain: &mut Vec<u8>) -> Result<NoteRecord> {
        if self.id != id {
            return Err(misplaced(&OWNER_NOTE_TO_RECORD));
        }
        opener
            .open_into(Field::NoteBody, id, self.sealed, plain)
            .map_err(|e| sealing_failed(&OWNER_NOTE_TO_RECORD, &e))?;
        let body: NoteBody = decode(&OWNER_NOTE_TO_RECORD, plain)?;
        Ok(NoteRecord {
            id: NoteId::from_u128(self.id),
            title: body.title,
            content: body.content,
            tags: body.tags,
            created_at: self.created_at,
            updated_at: self.updated_at,
            version: self.version,
        })
    }
}

impl NoteRowView<'_> {
    /// As [`NoteRowView::open`], adding the note to `list`.
    pub fn open_into(
        &self,
        id: u128,
        opener: &Opener,
        plain: &mut Vec<u8>,
        list: &mut NoteList,
    ) -> Result<()> {
        if self.id != id {
            return Err(misplaced(&OWNER_NOTE_TO_RECORD));
        }
        opener
            .open_into(Field::NoteBody, id, self.sealed, plain)
            .map_err(|e| sealing_failed(&OWNER_NOTE_TO_RECORD, &e))?;
        let mut text = list.text_writer();
        let mut body = postcard::Deserializer::from_bytes(plain);
        let (title, content) = serde::de::DeserializeSeed::deserialize(BodyInto(&mut text), &mut body)
            .map_err(|e| corrupt(&OWNER_NOTE_TO_RECORD, &e))?;
        text.finish(
            NoteId::from_u128(self.id),
            title,
            content,
            (self.created_at, self.updated_at, self.version),
        );
        Ok(())
    }
}

/// Reads a [`NoteBody`] straight into a note list's text: the title and
/// content spans it returns, the tags added as it goes.
struct BodyInto<'w, 'l>(&'w mut TextWriter<'l>);

type Span = (usize, usize);

impl<'de> serde::de::DeserializeSeed<'de> for BodyInto<'_, '_> {
    type Value = (Span, Span);

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> std::result::Result<Self::Value, D::Error> {
        // A struct is its fields in order, as a tuple.
        deserializer.deserialize_tuple(3, self)
    }
}

impl<'de> serde::de::Visitor<'de> for BodyInto<'_, '_> {
    type Value = (Span, Span);

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a note body: title, content and tags")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(
        self,
        mut seq: A,
    ) -> std::result::Result<Self::Value, A::Error> {
        let missing = |i| serde::de::Error::invalid_length(i, &"a note body: title, content and tags");
        let title: &str = seq.next_element()?.ok_or_else(|| missing(0))?;
        let title = self.0.push(title);
        let content: &str = seq.next_element()?.ok_or_else(|| missing(1))?;
        let content = self.0.push(content);
        seq.next_element_seed(TagsInto(self.0))?
            .ok_or_else(|| missing(2))?;
        Ok((title, content))
    }
}

struct TagsInto<'w, 'l>(&'w mut TextWriter<'l>);

impl<'de> serde::de::DeserializeSeed<'de> for TagsInto<'_, '_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> std::result::Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for TagsInto<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a note's tags")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<(), A::Error> {
        while let Some(tag) = seq.next_element::<&str>()? {
            self.0.push_tag(tag);
        }
        Ok(())
    }
}

impl NoteRow {
    /// The stored form of `note`, sealed.
    pub fn seal(note: &NoteRecord, owner: u128, sealer: &Sealer) -> Result<Vec<u8>> {
        let id = note.id.as_u128();
        let body = encode(
            &OWNER_NOTE_TO_RECORD,
            &NoteBodyRef {
                title: &note.title,
                content: &note.content,
                tags: &note.tags,
            },
        )?;
        let row = NoteRow {
            id,
            sealed: seal_in(&OWNER_NOTE_TO_RECORD, sealer, Field::NoteBody, (owner, id), &body)?,
            created_at: note.created_at,
            updated_at: note.updated_at,
            version: note.version,
        };
        encode(&OWNER_NOTE_TO_RECORD, &row)
    }
}

/// A note as schemas 1 to 3 stored it, in plain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NoteRowV3 {
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

impl From<NoteRowV3> for NoteRecord {
    fn from(row: NoteRowV3) -> Self {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn note(title: &str, content: &str, tags: &[&str], version: u64) -> NoteRecord {
        NoteRecord::sample(title, content, tags, OffsetDateTime::now_utc(), version)
    }

    /// A note read into a page's one buffer is the note read alone, and
    /// one taken off the page leaves nothing of itself behind.
    #[test]
    fn notes_read_into_a_list_are_the_notes_read_alone() {
        let sealer = Sealer::new(&[3; 32]);
        let owner = 7u128;
        let notes = [
            note("first", "one", &["a", "b"], 1),
            note("", "", &[], 2),
            note("é \"third\"", &"x".repeat(500), &["only"], 3),
        ];
        let (opener, mut plain, mut list) = (sealer.opener(owner), Vec::new(), NoteList::default());
        for n in &notes {
            let row = NoteRow::seal(n, owner, &sealer).unwrap();
            let view: NoteRowView<'_> = decode_borrowed(&OWNER_NOTE_TO_RECORD, &row).unwrap();
            let id = n.id.as_u128();
            assert_eq!(&view.open(id, &opener, &mut plain).unwrap(), n);
            view.open_into(id, &opener, &mut plain, &mut list).unwrap();
            assert!(
                view.open_into(id + 1, &opener, &mut plain, &mut list).is_err(),
                "misplaced"
            );
            let stranger = sealer.opener(owner + 1);
            assert!(
                view.open_into(id, &stranger, &mut plain, &mut list).is_err(),
                "another owner's"
            );
        }
        assert_eq!(list.records(), notes);
        list.pop();
        assert_eq!(list.records(), notes[..2]);
        let mut again = NoteList::default();
        again.push(&notes[0]);
        again.push(&notes[1]);
        assert_eq!(list.records(), again.records());
        assert_eq!(
            (list.text.len(), list.tags.len()),
            (again.text.len(), again.tags.len()),
            "no text left behind"
        );
        list.truncate(0);
        assert!(list.is_empty() && list.text.is_empty() && list.tags.is_empty());
    }
}
