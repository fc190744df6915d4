//! `/api/v1/me`: the caller's own account.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::payload::JsonBody;
use super::security::BearerAuth;
use super::text::CanonicalId;
use super::{ApiTags, AppState, Text};
use crate::audit::{Actor, AuditEvent, AuditQuery};
use crate::domain::{Password, SessionId};
use crate::error::{Error, FieldError};
use crate::problem_responses;
use crate::storage::{Storage, UserRecord};

pub struct MeApi;

/// An account as its owner sees it.
#[derive(Debug, Object)]
pub struct UserProfile {
    pub id: uuid::Uuid,
    /// Normalised (trimmed, lower-case) email.
    pub email: String,
    /// `user` or `admin`.
    pub role: String,
    pub created_at: OffsetDateTime,
    /// Logins need a second factor (TOTP) after the password.
    pub mfa_enabled: bool,
}

impl From<&UserRecord> for UserProfile {
    /// A new account's profile: no second factor yet.
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.0,
            email: user.email.clone(),
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
            mfa_enabled: false,
        }
    }
}

#[derive(ApiResponse)]
pub enum ExportResponse {
    /// Every note of the account, streamed.
    #[oai(status = 200)]
    Ok(JsonBody<super::export::NotesExport>),
}

#[derive(ApiResponse)]
pub enum ProfileResponse {
    /// The caller's profile.
    #[oai(status = 200)]
    Ok(Json<UserProfile>),
}

problem_responses! {
    pub enum ProfileError {
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
    }
}

/// A password change.
#[derive(Object)]
#[oai(deny_unknown_fields, example)]
pub struct PasswordChange {
    /// The account's password now.
    #[oai(deserialize_with = "current_password_field", validator(max_length = 1024))]
    pub current_password: Text,
    /// 8 to 1024 characters, not a common or easily guessed password, and
    /// not the current one.
    #[oai(
        deserialize_with = "new_password_field",
        validator(min_length = 8, max_length = 1024)
    )]
    pub new_password: Text,
}

/// Never shows the passwords.
impl std::fmt::Debug for PasswordChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordChange").finish_non_exhaustive()
    }
}

impl poem_openapi::types::Example for PasswordChange {
    fn example() -> Self {
        Self {
            current_password: "plaid otter cathedral".into(),
            new_password: "saffron kettle meridian".into(),
        }
    }
}

/// The password, re-entered to delete the account.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct AccountDeletion {
    /// The account's password.
    #[oai(deserialize_with = "password_field", validator(max_length = 1024))]
    pub password: Text,
}

/// Never shows the password.
impl std::fmt::Debug for AccountDeletion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccountDeletion").finish_non_exhaustive()
    }
}

#[derive(ApiResponse)]
pub enum AccountDeletedResponse {
    /// The account, its notes and its sessions are gone; its tokens no
    /// longer work and its email is free again.
    #[oai(status = 204)]
    NoContent,
}

problem_responses! {
    pub enum AccountDeletionError {
        /// `password` is not the account's password.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// The account is the last enabled admin, or its password changed
        /// meanwhile.
        Conflict = 409,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

crate::field_parsers! {
    password_field: Text => "password";
    current_password_field: Text => "current_password";
    new_password_field: Text => "new_password";
}

#[derive(ApiResponse)]
pub enum PasswordChangedResponse {
    /// The password is changed and every other session has ended; this
    /// one goes on.
    #[oai(status = 204)]
    NoContent,
}

problem_responses! {
    pub enum PasswordChangeError {
        /// `current_password` is not the account's password, or
        /// `new_password` breaks the password rules.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// The password changed meanwhile (another change, a reset): try
        /// again with the current one.
        Conflict = 409,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

/// A password from a request member, its errors named after that member.
fn password_member(raw: String, field: &str) -> Result<Password, FieldError> {
    Password::parse(raw).map_err(|e| FieldError::new(field, e.message))
}

/// A live session of your account.
#[derive(Debug, Object)]
pub struct SessionInfo {
    pub id: uuid::Uuid,
    /// When the login that opened it happened.
    pub created_at: OffsetDateTime,
    /// Its last login or token refresh (access tokens are not tracked, so
    /// it may have been used up to one access-token life after this).
    pub last_used_at: OffsetDateTime,
    /// The network the login came from: an IPv4 /24 or an IPv6 /48.
    #[oai(skip_serializing_if_is_none)]
    pub client_network: Option<String>,
    /// The `User-Agent` of the login, shortened.
    #[oai(skip_serializing_if_is_none)]
    pub user_agent: Option<String>,
    /// Whether this is the session of the access token that asked.
    pub current: bool,
}

/// One page of sessions, newest first.
#[derive(Debug, Object)]
pub struct SessionPage {
    pub items: Vec<SessionInfo>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum SessionPageResponse {
    /// Your live sessions.
    #[oai(status = 200)]
    Ok(Json<SessionPage>),
}

problem_responses! {
    pub enum SessionListError {
        /// A query parameter is invalid.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
    }
}

#[derive(ApiResponse)]
pub enum SessionEndedResponse {
    /// The session has ended: its refresh token and access tokens no
    /// longer work.
    #[oai(status = 204)]
    NoContent,
}

problem_responses! {
    pub enum SessionEndError {
        /// The id is not a UUID.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// Your account has no live session with this id.
        NotFound = 404,
    }
}

fn default_session_limit() -> u32 {
    50
}

/// A security event of your account.
#[derive(Debug, Object)]
pub struct AccountEvent {
    /// What happened: `signup`, `login`, `login_failed`,
    /// `backoff_started`, `refresh`, `refresh_reuse_detected`, `logout`,
    /// `session_ended`, `sessions_ended`, `password_changed`,
    /// `password_reset`, `role_changed`, `user_disabled`, `user_enabled`,
    /// `user_created`, `invite_used`...
    pub kind: String,
    pub at: OffsetDateTime,
    /// The session involved, if any.
    #[oai(skip_serializing_if_is_none)]
    pub session_id: Option<uuid::Uuid>,
    /// The network the request came from (IPv4 /24, IPv6 /48), if known.
    #[oai(skip_serializing_if_is_none)]
    pub client_network: Option<String>,
    /// `admin` or `operator` (the server's command line) when someone
    /// other than you made the change.
    #[oai(skip_serializing_if_is_none)]
    pub by: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
}

impl From<AuditEvent> for AccountEvent {
    fn from(event: AuditEvent) -> Self {
        Self {
            kind: event.kind.as_str().to_owned(),
            at: event.at,
            session_id: event.session.map(|s| s.0),
            client_network: event.client,
            by: event.actor.map(|a| match a {
                Actor::Admin(_) => "admin".to_owned(),
                Actor::Operator => "operator".to_owned(),
            }),
            detail: event.detail,
        }
    }
}

/// One page of events, newest first.
#[derive(Debug, Object)]
pub struct EventPage {
    pub items: Vec<AccountEvent>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

#[derive(ApiResponse)]
pub enum EventPageResponse {
    /// Your account's security events.
    #[oai(status = 200)]
    Ok(Json<EventPage>),
}

/// An audit cursor: the sequence number to continue below.
pub fn parse_event_cursor(cursor: Option<&str>) -> Result<Option<u64>, Error> {
    match cursor {
        None => Ok(None),
        Some(c) => c
            .parse::<u64>()
            .ok()
            .filter(|&seq| seq > 0)
            .map(Some)
            .ok_or_else(|| FieldError::new("cursor", "is not a cursor from this API").into()),
    }
}

/// Records an events page reads at most before it answers with what it
/// found and a cursor.
pub const EVENT_SCAN_LIMIT: usize = 10_000;

#[derive(ApiResponse)]
pub enum SessionsEndedResponse {
    /// Every other session has ended; this one goes on.
    #[oai(status = 204)]
    NoContent,
}

#[OpenApi(tag = "ApiTags::Me")]
impl MeApi {
    /// Your profile
    #[oai(path = "/api/v1/me", method = "get", operation_id = "getMe")]
    async fn me(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> Result<ProfileResponse, ProfileError> {
        let id = auth.0.user_id;
        let user = state.db.user(id).await?;
        // A valid token for a deleted account: treat like a bad token.
        let user = user.ok_or(Error::Unauthorized)?;
        let mut profile = UserProfile::from(&user);
        profile.mfa_enabled = state.auth.mfa_enabled(id).await?;
        Ok(ProfileResponse::Ok(Json(profile)))
    }

    /// Your sessions
    ///
    /// Every live session of your account, newest first, with where and
    /// from what it logged in; `current` marks the one asking.
    #[oai(path = "/api/v1/me/sessions", method = "get", operation_id = "listSessions")]
    async fn sessions(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_session_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 64))]
        cursor: Query<Option<String>>,
    ) -> Result<SessionPageResponse, SessionListError> {
        let after = super::text::id_cursor(cursor.0.as_deref())?.map(SessionId);
        let caller = auth.0;
        let (sessions, next) = state.auth.sessions_of(caller, after, limit.0 as usize).await?;
        let items = sessions
            .into_iter()
            .map(|s| SessionInfo {
                id: s.id.0,
                created_at: s.created_at,
                last_used_at: s.last_refreshed_at,
                client_network: s.client,
                user_agent: s.user_agent,
                current: s.id == caller.session_id,
            })
            .collect();
        Ok(SessionPageResponse::Ok(Json(SessionPage {
            items,
            next_cursor: next.map(|id| id.to_string()),
        })))
    }

    /// Delete your account
    ///
    /// Needs your password. The account, every note and every session go
    /// in one transaction: its tokens stop at once and the email is free
    /// for a new signup. A wrong password counts toward the login backoff
    /// (429 while it backs off). The last enabled admin cannot delete
    /// itself (409).
    #[oai(path = "/api/v1/me", method = "delete", operation_id = "deleteMe")]
    async fn delete_me(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<AccountDeletion>,
    ) -> Result<AccountDeletedResponse, AccountDeletionError> {
        let password = password_member(body.0.password.0, "password").map_err(Error::from)?;
        let client = state.clients.client_key(req);
        state.auth.delete_own_account(auth.0, password, client).await?;
        Ok(AccountDeletedResponse::NoContent)
    }

    /// Export your notes
    ///
    /// Every note of your account, newest first, in one JSON document
    /// (`format`: `notesd-export-1`). It is written as you read it, so its
    /// size does not matter to the server; each note is as it was when it
    /// was read. Should reading fail midway, or the session end (a logout,
    /// a password change, the account disabled or deleted), the document
    /// is cut short (and so is not valid JSON): never a partial document
    /// that parses.
    #[oai(path = "/api/v1/me/export", method = "get", operation_id = "exportNotes")]
    async fn export(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> Result<ExportResponse, ProfileError> {
        let owner = auth.0.user_id;
        // Refused now, with a status, rather than in the middle of a body.
        state.db.user(owner).await?.ok_or(Error::Unauthorized)?;
        let body = super::export::body(state.0.clone(), owner, auth.0.session_id);
        Ok(ExportResponse::Ok(JsonBody::new(body)))
    }

    /// Your security events
    ///
    /// What happened to your account, newest first: logins and failed
    /// ones, backoffs, refreshes, a refresh token used twice, sessions
    /// ended, password changes, and changes an admin made. No secret is
    /// ever recorded.
    #[oai(path = "/api/v1/me/events", method = "get", operation_id = "listMyEvents")]
    async fn events(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_session_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 20))]
        cursor: Query<Option<String>>,
    ) -> Result<EventPageResponse, SessionListError> {
        let query = AuditQuery {
            user: Some(auth.0.user_id),
            kinds: Vec::new(),
            since: None,
            until: None,
            before_seq: parse_event_cursor(cursor.0.as_deref())?,
            limit: limit.0 as usize,
            scan_limit: EVENT_SCAN_LIMIT,
        };
        let (records, next) = state.db.audit_events(query).await?;
        Ok(EventPageResponse::Ok(Json(EventPage {
            items: records.into_iter().map(|r| r.event.into()).collect(),
            next_cursor: next.map(|seq| seq.to_string()),
        })))
    }

    /// End one session
    ///
    /// Its refresh token and access tokens stop working at once. Ending
    /// the session of this access token is a logout.
    #[oai(
        path = "/api/v1/me/sessions/:id",
        method = "delete",
        operation_id = "endSession"
    )]
    async fn end_session(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The session's id.
        #[oai(name = "id")]
        id: Path<CanonicalId>,
    ) -> Result<SessionEndedResponse, SessionEndError> {
        state.auth.end_session(auth.0, SessionId(id.0.0)).await?;
        Ok(SessionEndedResponse::NoContent)
    }

    /// End your other sessions
    ///
    /// Ends every session of your account but the one of this access token:
    /// their refresh tokens and access tokens stop working at once. For a
    /// token or device you no longer trust.
    #[oai(
        path = "/api/v1/me/sessions",
        method = "delete",
        operation_id = "endOtherSessions"
    )]
    async fn end_other_sessions(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> Result<SessionsEndedResponse, ProfileError> {
        state.auth.end_other_sessions(auth.0).await?;
        Ok(SessionsEndedResponse::NoContent)
    }

    /// Change your password
    ///
    /// Needs the current password. Every other session of your account
    /// ends at once; this one goes on. A wrong current password counts
    /// toward the account's login backoff, as a failed login from this
    /// client would: while it backs off, the answer is 429 with
    /// `Retry-After`.
    #[oai(path = "/api/v1/me/password", method = "put", operation_id = "changePassword")]
    async fn change_password(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<PasswordChange>,
    ) -> Result<PasswordChangedResponse, PasswordChangeError> {
        let PasswordChange {
            current_password,
            new_password,
        } = body.0;
        let current = password_member(current_password.0, "current_password");
        let new = password_member(new_password.0, "new_password");
        let (current, new) = match (current, new) {
            (Ok(current), Ok(new)) => (current, new),
            (current, new) => {
                return Err(
                    Error::Validation([current.err(), new.err()].into_iter().flatten().collect()).into(),
                );
            }
        };
        let client = state.clients.client_key(req);
        state.auth.change_password(auth.0, current, new, client).await?;
        Ok(PasswordChangedResponse::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::{LoginRequest, SignupRequest};

    #[test]
    fn request_bodies_with_passwords_never_print_them() {
        use poem_openapi::types::Example;
        let secret = "plaid otter cathedral";
        let printed = [
            format!("{:?}", PasswordChange::example()),
            format!("{:?}", LoginRequest::example()),
            format!("{:?}", SignupRequest::example()),
        ];
        for line in printed {
            assert!(!line.contains(secret) && !line.contains("saffron"), "{line}");
        }
    }
}
