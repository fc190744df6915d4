//! `/api/v1/notes`: the caller's notes. Every operation passes the caller's
//! user id to the store, which keys notes by (owner, id): another user's note
//! is indistinguishable from a missing one (404).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use poem::web::Data;
use poem_openapi::param::{Header, Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::json;
use super::payload::JsonBody;
use super::security::BearerAuth;
use super::text::{CanonicalId, TagList, tags_field};
use super::{ApiTags, AppState, Text};
use crate::domain::{Content, NoteId, Tag, Tags, Title, UserId};
use crate::error::{Error, FieldError};
use crate::problem_responses;
use crate::storage::{Conditional, NoteQuery, NoteRecord, NoteUpdate, NoteView, Storage, Weigh};

pub struct NotesApi;

/// The notes routes' limits, from the settings.
pub struct NotesConfig {
    /// Notes a `q` search reads per request.
    pub search_scan_limit: usize,
    /// Bytes of text a `q` search reads per request.
    pub search_scan_bytes: usize,
    /// Bytes of JSON one list page may take.
    pub max_page_bytes: usize,
    pub quota: crate::storage::Quota,
    searches: SearchSlots,
}

impl NotesConfig {
    pub fn new(settings: &crate::Settings) -> Self {
        Self {
            search_scan_limit: settings.limits.search_scan_limit,
            search_scan_bytes: settings.limits.search_scan_bytes,
            max_page_bytes: settings.limits.max_page_bytes,
            quota: crate::storage::Quota {
                notes: settings.limits.max_notes_per_account,
                bytes: settings.limits.max_bytes_per_account,
            },
            searches: SearchSlots {
                per_account: settings.limits.max_searches_per_account,
                running: Mutex::default(),
            },
        }
    }
}

/// Searches running per account: one account cannot occupy every
/// scanning thread.
struct SearchSlots {
    per_account: usize,
    running: Mutex<HashMap<UserId, usize>>,
}

impl SearchSlots {
    fn enter(&self, user: UserId) -> Option<SearchSlot<'_>> {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let count = running.entry(user).or_insert(0);
        if *count >= self.per_account {
            return None;
        }
        *count += 1;
        Some(SearchSlot { slots: self, user })
    }
}

struct SearchSlot<'a> {
    slots: &'a SearchSlots,
    user: UserId,
}

impl Drop for SearchSlot<'_> {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = running.get_mut(&self.user) {
            *count -= 1;
            if *count == 0 {
                running.remove(&self.user);
            }
        }
    }
}

/// Tells a search on another thread that its request has gone (timed out,
/// or the client left) when the handler is dropped.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// What a note adds to a list page, in bytes of JSON: exact for the text,
/// generous for the fixed members (id, dates, version, punctuation); and
/// its cheap bound, as if every byte took the longest escape (six bytes).
pub(crate) const JSON_WEIGHT: Weigh = Weigh {
    exact: |note| json_weight(note, json::escaped_len),
    bound: |note| json_weight(note, |s| s.len() * 6),
};

fn json_weight(note: &NoteView<'_>, text: fn(&str) -> usize) -> usize {
    json::NOTE_FIXED + text(note.title) + text(note.content) + note.tags().map(|t| text(t) + 3).sum::<usize>()
}

/// A note as stored.
// The schema of what `json::note` writes (the doc comment is the spec's).
#[derive(Debug, Object)]
#[oai(example)]
pub struct Note {
    /// UUIDv7: sorts by creation time.
    pub id: uuid::Uuid,
    pub title: String,
    pub content: String,
    /// Sorted, without duplicates.
    pub tags: Vec<String>,
    pub created_at: OffsetDateTime,
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

/// A whole note, for create and replace.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields, example)]
pub struct NoteInput {
    /// 1 to 200 characters, not all white space.
    #[oai(deserialize_with = "title_field", validator(min_length = 1, max_length = 200))]
    pub title: Text,
    /// Up to 100 000 characters; empty when absent.
    #[oai(
        deserialize_with = "content_field",
        validator(max_length = 100000),
        skip_serializing_if_is_none
    )]
    pub content: Option<Text>,
    /// Up to 20 tags, each 1 to 32 characters of `a-z`, `0-9`, `_`, `-`;
    /// none when absent.
    #[oai(deserialize_with = "tags_field", skip_serializing_if_is_none)]
    pub tags: Option<TagList>,
}

impl poem_openapi::types::Example for NoteInput {
    fn example() -> Self {
        Self {
            title: "Groceries".into(),
            content: Some("oat milk, lemons".into()),
            tags: Some(TagList(vec!["home".into()])),
        }
    }
}

/// Fields to change; absent fields keep their value.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct NotePatch {
    /// 1 to 200 characters, not all white space.
    #[oai(
        deserialize_with = "title_patch_field",
        validator(min_length = 1, max_length = 200),
        skip_serializing_if_is_none
    )]
    pub title: Option<Text>,
    /// Up to 100 000 characters.
    #[oai(
        deserialize_with = "content_field",
        validator(max_length = 100000),
        skip_serializing_if_is_none
    )]
    pub content: Option<Text>,
    /// Replaces the whole tag set.
    #[oai(deserialize_with = "tags_field", skip_serializing_if_is_none)]
    pub tags: Option<TagList>,
}

crate::field_parsers! {
    title_field: Text => "title";
    title_patch_field: Option<Text> => "title";
    content_field: Option<Text> => "content";
}

/// One page of notes, newest first.
// The schema of what `json::page` writes.
#[derive(Debug, Object)]
pub struct NotePage {
    pub items: Vec<Note>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
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
        /// The account's quota of notes or bytes is reached
        /// (`urn:notesd:problem:quota-exceeded`).
        Forbidden = 403,
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
        /// The change would take the account past its byte quota
        /// (`urn:notesd:problem:quota-exceeded`).
        Forbidden = 403,
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

/// The error for a conditional write that did not happen.
fn refusal<T>(outcome: &Conditional<T>) -> Error {
    match outcome {
        Conditional::NotFound => Error::NotFound,
        Conditional::VersionMismatch => Error::PreconditionFailed,
        Conditional::OverQuota => Error::QuotaExceeded,
        Conditional::Done(_) => Error::internal("a completed write reported as refused"),
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
    let tags = input.tags.unwrap_or(TagList(Vec::new()));
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
    tags: Option<TagList>,
) -> Result<Fields, Error> {
    let mut errors: Vec<FieldError> = Vec::new();
    let title = title.and_then(|t| Title::parse(t.0).map_err(|e| errors.push(e)).ok());
    let content = content.and_then(|c| Content::parse(c.0).map_err(|e| errors.push(e)).ok());
    let tags = tags.and_then(|t| Tags::parse(&t.0).map_err(|e| errors.push(e)).ok());
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
    let quota = state.notes.quota;
    match state.db.update_note(owner, id, update, quota).await? {
        Conditional::Done(note) => {
            let body = json::note(&note).map_err(Error::internal)?;
            Ok(NoteResponse::Ok(JsonBody::new(body), etag(note.version)))
        }
        other => Err(refusal(&other).into()),
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
            id: NoteId::generate(),
            title,
            content,
            tags,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        let owner = auth.0.user_id;
        // Written before the note moves into the store (no copy of it).
        let body = json::note(&note).map_err(Error::internal)?;
        let location = format!("/api/v1/notes/{}", note.id);
        match state.db.create_note(owner, note, state.notes.quota).await? {
            Conditional::Done(()) => {}
            // The account was deleted while the request ran.
            Conditional::NotFound => return Err(Error::Unauthorized.into()),
            other => return Err(refusal(&other).into()),
        }
        Ok(CreatedResponse::Created(JsonBody::new(body), location, etag(1)))
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
        #[oai(validator(min_length = 1, max_length = 32))]
        tag: Query<Option<String>>,
        /// Only notes whose title or content contains this text.
        #[oai(validator(min_length = 1, max_length = 200))]
        q: Query<Option<String>>,
    ) -> Result<PageResponse, ListError> {
        let after = super::text::id_cursor(cursor.0.as_deref())?.map(NoteId);
        // Checked here rather than by a `pattern` validator, which would
        // compile its regex on every request; the document carries the
        // pattern (see `api::spec_json`).
        let tag = match tag.0 {
            Some(t) => Some(Tag::parse(&t).map_err(|_| {
                Error::from(FieldError::new(
                    "tag",
                    "must be 1-32 characters of a-z, 0-9, _ or -",
                ))
            })?),
            None => None,
        };
        let config = &state.notes;
        let cancel = CancelOnDrop(Arc::new(AtomicBool::new(false)));
        let query = NoteQuery {
            limit: limit.0 as usize,
            // The envelope (`{"items":[…],"next_cursor":"…"}`) fits in 96.
            max_bytes: config.max_page_bytes.saturating_sub(96),
            weigh: JSON_WEIGHT,
            after,
            tag: tag.map(|t| t.as_str().to_owned()),
            q: q.0.map(|q| q.to_lowercase()),
            scan_limit: config.search_scan_limit,
            scan_bytes: config.search_scan_bytes,
            cancelled: Some(cancel.0.clone()),
        };
        let owner = auth.0.user_id;
        // A page without search reads at most `limit + 1` notes: inline. A
        // search may read up to its budget: on a scanning thread, at most
        // a few at once per account.
        let (notes, next) = if query.q.is_some() {
            let Some(_slot) = config.searches.enter(owner) else {
                return Err(Error::TooManyRequests { retry_after: 1 }.into());
            };
            let found = state.db.list_notes(owner, query).await?;
            drop(cancel);
            found
        } else {
            state.db.list_notes(owner, query).await?
        };
        let body = json::page(&notes, next).map_err(Error::internal)?;
        Ok(PageResponse::Ok(JsonBody::new(body)))
    }

    /// Read a note
    #[oai(path = "/:id", method = "get", operation_id = "getNote")]
    async fn get(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The note's id.
        #[oai(name = "id")]
        id: Path<CanonicalId>,
    ) -> Result<NoteResponse, ReadError> {
        let (owner, id) = (auth.0.user_id, NoteId(id.0.0));
        let note = state.db.note(owner, id).await?.ok_or(Error::NotFound)?;
        let body = json::note(&note).map_err(Error::internal)?;
        Ok(NoteResponse::Ok(JsonBody::new(body), etag(note.version)))
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
        id: Path<CanonicalId>,
        /// The `ETag` you last read, e.g. `"3"`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<NoteInput>,
    ) -> Result<NoteResponse, WriteError> {
        let (title, content, tags) = parse_input(body.0)?;
        let fields = (Some(title), Some(content), Some(tags));
        update_note(&state, auth, id.0.0, if_match.0.as_deref(), fields).await
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
        id: Path<CanonicalId>,
        /// The `ETag` you last read, e.g. `"3"`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
        body: Json<NotePatch>,
    ) -> Result<NoteResponse, WriteError> {
        let NotePatch { title, content, tags } = body.0;
        let fields = collect_fields(title, content, tags)?;
        update_note(&state, auth, id.0.0, if_match.0.as_deref(), fields).await
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
        id: Path<CanonicalId>,
        /// The `ETag` you last read, e.g. `"3"`.
        #[oai(name = "If-Match")]
        if_match: Header<Option<String>>,
    ) -> Result<DeletedResponse, DeleteError> {
        let (owner, id) = (auth.0.user_id, NoteId(id.0.0));
        let expected = parse_if_match(if_match.0.as_deref());
        match state.db.delete_note(owner, id, expected).await? {
            Conditional::Done(()) => Ok(DeletedResponse::NoContent),
            other => Err(refusal(&other).into()),
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
    fn searches_per_account_are_capped_and_given_back() {
        let slots = SearchSlots {
            per_account: 1,
            running: Mutex::default(),
        };
        let (alice, bob) = (UserId::generate(), UserId::generate());
        let running = slots.enter(alice).expect("the first search");
        assert!(slots.enter(alice).is_none(), "a second one at once is refused");
        assert!(slots.enter(bob).is_some(), "per account");
        drop(running);
        assert!(slots.enter(alice).is_some(), "given back when it ends");
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
