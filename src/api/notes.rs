//! `/api/v1/notes`: the caller's notes. Every operation passes the caller's
//! user id to the store, which keys notes by (owner, id): another user's note
//! is indistinguishable from a missing one (404).

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::payload::JsonBody;
use super::security::BearerAuth;
use super::{ApiTags, AppState, Text};
use crate::domain::{Content, NoteId, Tags, Title};
use crate::error::{Error, FieldError};
use crate::problem_responses;
use crate::store::{Conditional, NoteQuery, NoteRecord, NoteUpdate};

pub struct NotesApi;

/// A note as stored.
#[derive(Debug, Object, serde::Serialize)]
#[oai(example)]
pub struct Note {
    /// UUIDv7: sorts by creation time.
    pub id: uuid::Uuid,
    pub title: String,
    pub content: String,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Starts at 1 and grows with every change; also the `ETag`.
    pub version: u64,
}

impl poem_openapi::types::Example for Note {
    fn example() -> Self {
        let at = OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000);
        Self {
            id: uuid::Uuid::nil(),
            title: "Groceries".into(),
            content: "oat milk, lemons".into(),
            tags: vec!["home".into()],
            created_at: at,
            updated_at: at,
            version: 1,
        }
    }
}

impl From<NoteRecord> for Note {
    fn from(n: NoteRecord) -> Self {
        Self {
            id: n.note_id().0,
            title: n.title,
            content: n.content,
            tags: n.tags,
            created_at: n.created_at,
            updated_at: n.updated_at,
            version: n.version,
        }
    }
}

/// A whole note, for create and replace.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct NoteInput {
    /// 1 to 200 characters.
    #[oai(deserialize_with = "title_field", validator(min_length = 1, max_length = 200))]
    pub title: Text,
    /// Up to 100 000 characters; empty when absent.
    #[oai(deserialize_with = "content_field", validator(max_length = 100000))]
    pub content: Option<Text>,
    /// Up to 20 tags, each 1 to 32 characters of `a-z`, `0-9`, `_`, `-`;
    /// none when absent.
    #[oai(
        deserialize_with = "tags_field",
        validator(max_items = 20, pattern = "^[a-z0-9_-]{1,32}$")
    )]
    pub tags: Option<Vec<Text>>,
}

impl poem_openapi::types::Example for NoteInput {
    fn example() -> Self {
        Self {
            title: "Groceries".into(),
            content: Some("oat milk, lemons".into()),
            tags: Some(vec!["home".into()]),
        }
    }
}

/// Fields to change; absent fields keep their value.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct NotePatch {
    /// 1 to 200 characters.
    #[oai(
        deserialize_with = "title_patch_field",
        validator(min_length = 1, max_length = 200)
    )]
    pub title: Option<Text>,
    /// Up to 100 000 characters.
    #[oai(deserialize_with = "content_field", validator(max_length = 100000))]
    pub content: Option<Text>,
    /// Replaces the whole tag set.
    #[oai(
        deserialize_with = "tags_field",
        validator(max_items = 20, pattern = "^[a-z0-9_-]{1,32}$")
    )]
    pub tags: Option<Vec<Text>>,
}

crate::field_parsers! {
    title_field: Text => "title";
    title_patch_field: Option<Text> => "title";
    content_field: Option<Text> => "content";
    tags_field: Option<Vec<Text>> => "tags";
}

/// One page of notes, newest first.
#[derive(Debug, Object, serde::Serialize)]
pub struct NotePage {
    pub items: Vec<Note>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum CreatedResponse {
    /// The note was stored.
    #[oai(status = 201)]
    Created(
        JsonBody<Note>,
        /// The new note's URL.
        #[oai(header = "Location")]
        String,
        /// The note's version, for `If-Match`.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
pub enum NoteResponse {
    /// The note.
    #[oai(status = 200)]
    Ok(
        JsonBody<Note>,
        /// The note's version, for `If-Match`.
        #[oai(header = "ETag")]
        String,
    ),
}

#[derive(ApiResponse)]
pub enum PageResponse {
    /// A page of notes.
    #[oai(status = 200)]
    Ok(JsonBody<NotePage>),
}

#[derive(ApiResponse)]
pub enum DeletedResponse {
    /// The note is gone.
    #[oai(status = 204)]
    NoContent,
}

problem_responses! {
    pub enum CreateError {
        /// A field is invalid.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

problem_responses! {
    pub enum ListError {
        /// A query parameter is invalid.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
    }
}

problem_responses! {
    pub enum ReadError {
        /// The id is not a UUID.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// You have no note with this id.
        NotFound = 404,
    }
}

problem_responses! {
    pub enum WriteError {
        /// A field or the id is invalid.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// You have no note with this id.
        NotFound = 404,
        /// `If-Match` names a version that is no longer current.
        PreconditionFailed = 412,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

problem_responses! {
    pub enum DeleteError {
        /// The id is not a UUID.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// You have no note with this id.
        NotFound = 404,
        /// `If-Match` names a version that is no longer current.
        PreconditionFailed = 412,
    }
}

fn etag(version: u64) -> String {
    format!("\"{version}\"")
}

/// Reads `If-Match`: `*` (or no header) imposes nothing beyond existence;
/// otherwise the strong entity tags it lists. A tag we never issued (weak,
/// malformed) can match nothing, so it leads to 412, as RFC 9110 asks.
fn parse_if_match(header: Option<&str>) -> Option<Vec<u64>> {
    let header = header?.trim();
    if header == "*" {
        return None;
    }
    let versions = header
        .split(',')
        .filter_map(|tag| {
            let tag = tag.trim();
            tag.strip_prefix('"')?.strip_suffix('"')?.parse::<u64>().ok()
        })
        .collect();
    Some(versions)
}

/// Validates a whole note into its stored field values.
fn parse_input(input: NoteInput) -> Result<(String, String, Vec<String>), Error> {
    let content = input.content.unwrap_or_else(|| Text(String::new()));
    let tags = input.tags.unwrap_or_default();
    collect_fields(Some(input.title), Some(content), Some(tags)).map(|(t, c, g)| {
        // All three were given, so all three came back.
        (
            t.unwrap_or_default(),
            c.unwrap_or_default(),
            g.unwrap_or_default(),
        )
    })
}

type Fields = (Option<String>, Option<String>, Option<Vec<String>>);

/// Validates whichever fields are present, reporting every bad one.
fn collect_fields(
    title: Option<Text>,
    content: Option<Text>,
    tags: Option<Vec<Text>>,
) -> Result<Fields, Error> {
    let mut errors: Vec<FieldError> = Vec::new();
    let title = title.and_then(|t| Title::parse(t.0).map_err(|e| errors.push(e)).ok());
    let content = content.and_then(|c| Content::parse(c.0).map_err(|e| errors.push(e)).ok());
    let tags = tags.and_then(|t| {
        let raw: Vec<String> = t.into_iter().map(|t| t.0).collect();
        Tags::parse(&raw).map_err(|e| errors.push(e)).ok()
    });
    if !errors.is_empty() {
        return Err(Error::Validation(errors));
    }
    Ok((
        title.map(Title::into_inner),
        content.map(Content::into_inner),
        tags.map(Tags::into_strings),
    ))
}

/// Applies validated field changes under the `If-Match` condition.
async fn update_note(
    state: &Arc<AppState>,
    auth: BearerAuth,
    id: uuid::Uuid,
    if_match: Option<&str>,
    (title, content, tags): Fields,
) -> Result<NoteResponse, WriteError> {
    let update = NoteUpdate {
        title,
        content,
        tags,
        expected_version: parse_if_match(if_match),
        now: state.auth.clock.now(),
    };
    let (owner, id) = (auth.0.user_id, NoteId(id));
    match state.db.write(move |s| s.update_note(owner, id, update)).await? {
        Conditional::Done(note) => {
            let tag = etag(note.version);
            Ok(NoteResponse::Ok(JsonBody(note.into()), tag))
        }
        Conditional::NotFound => Err(Error::NotFound.into()),
        Conditional::VersionMismatch => Err(Error::PreconditionFailed.into()),
    }
}

#[OpenApi(prefix_path = "/api/v1/notes", tag = "ApiTags::Notes")]
impl NotesApi {
    /// Create a note
    #[oai(path = "/", method = "post", operation_id = "createNote")]
    async fn create(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<NoteInput>,
    ) -> Result<CreatedResponse, CreateError> {
        let (title, content, tags) = parse_input(body.0)?;
        let now = state.auth.clock.now();
        let note = NoteRecord {
            id: NoteId::generate().as_u128(),
            title,
            content,
            tags,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let owner = auth.0.user_id;
        let stored = note.clone();
        state.db.write(move |s| s.insert_note(owner, &stored)).await?;
        let location = format!("/api/v1/notes/{}", note.note_id());
        Ok(CreatedResponse::Created(JsonBody(note.into()), location, etag(1)))
    }

    /// List notes
    ///
    /// Newest first. Follow `next_cursor` for more. `tag` keeps notes with
    /// that tag; `q` keeps notes whose title or content contains it,
    /// ignoring case. A search reads a bounded number of notes per request,
    /// so a page may hold fewer than `limit` notes and still have a
    /// `next_cursor`: only its absence means the end.
    #[oai(path = "/", method = "get", operation_id = "listNotes")]
    async fn list(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 64))]
        cursor: Query<Option<String>>,
        /// Only notes with this tag.
        #[oai(validator(pattern = "^[a-z0-9_-]{1,32}$"))]
        tag: Query<Option<String>>,
        /// Only notes whose title or content contains this text.
        #[oai(validator(min_length = 1, max_length = 200))]
        q: Query<Option<String>>,
    ) -> Result<PageResponse, ListError> {
        let after = match cursor.0 {
            Some(c) => Some(NoteId(uuid::Uuid::parse_str(&c).map_err(|_| {
                Error::from(FieldError::new("cursor", "is not a cursor from this API"))
            })?)),
            None => None,
        };
        let query = NoteQuery {
            limit: limit.0 as usize,
            after,
            tag: tag.0,
            q: q.0.map(|q| q.to_lowercase()),
            scan_limit: state.search_scan_limit,
        };
        let owner = auth.0.user_id;
        // A page without search reads at most `limit + 1` notes: inline. A
        // search may read up to the scan limit: on the blocking pool.
        let (notes, next) = if query.q.is_some() {
            state.db.scan(move |s| s.list_notes(owner, &query)).await?
        } else {
            state.db.read(|s| s.list_notes(owner, &query))?
        };
        Ok(PageResponse::Ok(JsonBody(NotePage {
            items: notes.into_iter().map(Note::from).collect(),
            next_cursor: next.map(|id| id.to_string()),
        })))
    }

    /// Read a note
    #[oai(path = "/:id", method = "get", operation_id = "getNote")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The note's id.
        #[oai(name = "id")]
        id: Path<uuid::Uuid>,
    ) -> Result<NoteResponse, ReadError> {
        let (owner, id) = (auth.0.user_id, NoteId(id.0));
        let note = state.db.read(|s| s.note(owner, id))?.ok_or(Error::NotFound)?;
        let tag = etag(note.version);
        Ok(NoteResponse::Ok(JsonBody(note.into()), tag))
    }

    /// Replace a note
    ///
    /// With `If-Match`, only if the note is still at that version (else 412).
    #[oai(path = "/:id", method = "put", operation_id = "replaceNote")]
    async fn replace(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The note's id.
        #[oai(name = "id")]
        id: Path<uuid::Uuid>,
        /// The `ETag` you last read, e.g. `"3"`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<NoteInput>,
    ) -> Result<NoteResponse, WriteError> {
        let (title, content, tags) = parse_input(body.0)?;
        let fields = (Some(title), Some(content), Some(tags));
        update_note(&state, auth, id.0, if_match.0.as_deref(), fields).await
    }

    /// Change some fields of a note
    ///
    /// With `If-Match`, only if the note is still at that version (else 412).
    #[oai(path = "/:id", method = "patch", operation_id = "patchNote")]
    async fn patch(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The note's id.
        #[oai(name = "id")]
        id: Path<uuid::Uuid>,
        /// The `ETag` you last read, e.g. `"3"`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<NotePatch>,
    ) -> Result<NoteResponse, WriteError> {
        let NotePatch { title, content, tags } = body.0;
        let fields = collect_fields(title, content, tags)?;
        update_note(&state, auth, id.0, if_match.0.as_deref(), fields).await
    }

    /// Delete a note
    ///
    /// With `If-Match`, only if the note is still at that version (else 412).
    #[oai(path = "/:id", method = "delete", operation_id = "deleteNote")]
    async fn delete(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The note's id.
        #[oai(name = "id")]
        id: Path<uuid::Uuid>,
        /// The `ETag` you last read, e.g. `"3"`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> Result<DeletedResponse, DeleteError> {
        let (owner, id) = (auth.0.user_id, NoteId(id.0));
        let expected = parse_if_match(if_match.0.as_deref());
        match state
            .db
            .write(move |s| s.delete_note(owner, id, expected))
            .await?
        {
            Conditional::Done(()) => Ok(DeletedResponse::NoContent),
            Conditional::NotFound => Err(Error::NotFound.into()),
            Conditional::VersionMismatch => Err(Error::PreconditionFailed.into()),
        }
    }
}

fn default_limit() -> u32 {
    20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_and_openapi_serialise_a_note_alike() {
        use poem_openapi::types::{Example, ToJSON};
        let note = Note::example();
        let ours = serde_json::to_value(&note).unwrap();
        assert_eq!(Some(ours), note.to_json());
        let page = NotePage {
            items: vec![Note::example()],
            next_cursor: None,
        };
        assert_eq!(Some(serde_json::to_value(&page).unwrap()), page.to_json());
    }

    #[test]
    fn if_match_forms() {
        assert_eq!(parse_if_match(None), None);
        assert_eq!(parse_if_match(Some("*")), None);
        assert_eq!(parse_if_match(Some("\"3\"")), Some(vec![3]));
        assert_eq!(parse_if_match(Some("\"3\", \"5\"")), Some(vec![3, 5]));
        assert_eq!(
            parse_if_match(Some("W/\"3\"")),
            Some(vec![]),
            "weak tags never match"
        );
        assert_eq!(
            parse_if_match(Some("3")),
            Some(vec![]),
            "unquoted is not an entity tag"
        );
    }
}
