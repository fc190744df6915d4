//! `GET /api/v1/me/export`: every note of the caller as one JSON document,
//! written page by page as the client reads it. At most one page (about
//! [`PAGE_BYTES`] of JSON) is held at a time, whatever the account's size,
//! and a client that stops reading stops the reading of notes.

use std::sync::Arc;

use bytes::Bytes;
use poem_openapi::Object;
use time::OffsetDateTime;

use super::AppState;
use super::me::UserProfile;
use super::notes::{JSON_WEIGHT, Note};
use crate::domain::{NoteId, SessionId, UserId};
use crate::storage::{NoteQuery, Storage, UserRecord};

/// JSON read per page, at most (a single larger note is a page alone).
pub const PAGE_BYTES: usize = 256 * 1024;
/// Notes per page, at most.
const PAGE_NOTES: usize = 100;
/// The document's `format`.
pub const FORMAT: &str = "notesd-export-1";

/// Every note of an account, as `GET /api/v1/me/export` writes it.
#[derive(Debug, Object)]
pub struct NotesExport {
    /// `notesd-export-1`.
    pub format: String,
    pub exported_at: OffsetDateTime,
    pub account: UserProfile,
    /// Newest first; each note as it was when its page was read (a note
    /// created during the export may be missing, one deleted during it
    /// may be present).
    pub notes: Vec<Note>,
}

/// Where the writing of an export stands.
enum Stage {
    Head,
    Notes { after: Option<NoteId>, first: bool },
    Done,
}

struct Export {
    state: Arc<AppState>,
    owner: UserId,
    /// The session that asked: once it ends (logout, a password change,
    /// the account disabled or deleted), the export stops.
    session: SessionId,
    stage: Stage,
}

/// The document's opening, up to the notes array.
fn head(user: &UserRecord, mfa_enabled: bool, now: OffsetDateTime) -> Result<Vec<u8>, serde_json::Error> {
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    let head = serde_json::json!({
        "format": FORMAT,
        "exported_at": rfc3339(now),
        "account": {
            "id": user.id.0,
            "email": user.email,
            "role": user.role.as_str(),
            "created_at": rfc3339(user.created_at),
            "mfa_enabled": mfa_enabled,
        },
    });
    let mut bytes = serde_json::to_vec(&head)?;
    // `{...}` becomes `{..., "notes": [`.
    bytes.pop();
    bytes.extend_from_slice(b",\"notes\":[");
    Ok(bytes)
}

impl Export {
    /// The next chunk of the document, `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, std::io::Error> {
        let io = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        match self.stage {
            Stage::Done => Ok(None),
            Stage::Head => {
                let user = self
                    .state
                    .db
                    .user(self.owner)
                    .await
                    .map_err(|e| io(&e))?
                    .ok_or_else(|| std::io::Error::other("the account is gone"))?;
                let mfa = self.state.auth.mfa_enabled(user.id).await.map_err(|e| io(&e))?;
                let bytes = head(&user, mfa, self.state.auth.clock.now()).map_err(|e| io(&e))?;
                self.stage = Stage::Notes {
                    after: None,
                    first: true,
                };
                Ok(Some(bytes.into()))
            }
            Stage::Notes { after, first } => {
                // Each page asks again: an export that outlives its session
                // or its account is cut short, never completed.
                let user = self.state.db.user(self.owner).await.map_err(|e| io(&e))?;
                if self.state.auth.revoked.is_revoked(self.session) || user.is_none_or(|u| u.disabled) {
                    return Err(std::io::Error::other(
                        "the session or the account ended during an export",
                    ));
                }
                let query = NoteQuery {
                    limit: PAGE_NOTES,
                    max_bytes: PAGE_BYTES,
                    weigh: JSON_WEIGHT,
                    after,
                    ..NoteQuery::first(PAGE_NOTES)
                };
                let (notes, next) = self
                    .state
                    .db
                    .list_notes(self.owner, query)
                    .await
                    .map_err(|e| io(&e))?;
                let mut out = Vec::with_capacity(PAGE_BYTES / 4);
                super::json::notes_into(&mut out, &notes, first).map_err(|e| io(&e))?;
                let wrote = !notes.is_empty();
                if let Some(after) = next {
                    self.stage = Stage::Notes {
                        after: Some(after),
                        first: first && !wrote,
                    };
                } else {
                    out.extend_from_slice(b"]}");
                    self.stage = Stage::Done;
                }
                Ok(Some(out.into()))
            }
        }
    }
}

/// The export of `owner`'s notes as a body that is written as it is read.
pub fn body(state: Arc<AppState>, owner: UserId, session: SessionId) -> poem::Body {
    let export = Export {
        state,
        owner,
        session,
        stage: Stage::Head,
    };
    let stream = futures_util::stream::unfold(export, |mut export| async move {
        match export.next_chunk().await {
            Ok(Some(chunk)) => Some((Ok(chunk), export)),
            Ok(None) => None,
            Err(e) => {
                // The status has gone out: cut the body short, so the
                // client sees a broken document, not a complete one.
                tracing::warn!(error = %e, "an export stopped early");
                export.stage = Stage::Done;
                Some((Err(e), export))
            }
        }
    });
    poem::Body::from_bytes_stream(stream)
}
