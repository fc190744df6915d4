//! `/api/v1/admin`: accounts, invites and the audit log, for admins only.
//! Every operation reads the caller's role from the store (not from the
//! token), so a demotion refuses the next request with 403 and a promotion
//! needs no new login. No operation returns note content.

use std::sync::Arc;

use base64ct::{Base64UrlUnpadded, Encoding};
use poem::web::Data;
use poem_openapi::param::{Path, Query};
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::me::{EVENT_SCAN_LIMIT, parse_event_cursor};
use super::security::BearerAuth;
use super::text::CanonicalId;
use super::{ApiTags, AppState, Text};
use crate::audit::{Actor, AuditKind, AuditQuery, AuditRecord};
use crate::domain::{Email, InviteId, Password, Role, UserId};
use crate::error::{Error, FieldError};
use crate::problem_responses;
use crate::storage::{InviteRecord, Storage, UserRecord};

pub struct AdminApi;

/// An account as an admin sees it: no note content, ever.
#[derive(Debug, Object)]
pub struct AdminUser {
    pub id: uuid::Uuid,
    pub email: String,
    /// `user` or `admin`.
    pub role: String,
    /// A disabled account cannot log in and has no live session.
    pub disabled: bool,
    pub created_at: OffsetDateTime,
    /// How many notes it holds.
    pub notes: u64,
    /// Bytes of note text it holds.
    pub bytes: u64,
}

async fn admin_user(state: &AppState, user: UserRecord) -> Result<AdminUser, Error> {
    let (notes, bytes) = state.db.usage(user.id).await?;
    Ok(AdminUser {
        id: user.id.0,
        email: user.email,
        role: user.role.as_str().to_owned(),
        disabled: user.disabled,
        created_at: user.created_at,
        notes,
        bytes,
    })
}

/// One page of accounts, by email.
#[derive(Debug, Object)]
pub struct UserPage {
    pub items: Vec<AdminUser>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

/// A new account made by an admin.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct NewUser {
    #[oai(validator(min_length = 3, max_length = 254))]
    pub email: Text,
    /// 8 to 1024 characters, not a common or easily guessed password.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub password: Text,
    /// `user` (default) or `admin`.
    #[oai(skip_serializing_if_is_none)]
    pub role: Option<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser").finish_non_exhaustive()
    }
}

/// A role to set.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RoleChange {
    /// `user` or `admin`.
    pub role: String,
}

/// A password an admin sets for an account.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct PasswordReset {
    /// 8 to 1024 characters, not a common or easily guessed password.
    #[oai(validator(min_length = 8, max_length = 1024))]
    pub password: Text,
}

impl std::fmt::Debug for PasswordReset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordReset").finish_non_exhaustive()
    }
}

/// A stored security event.
#[derive(Debug, Object)]
pub struct AuditEntry {
    /// Its place in the log (1, 2, 3...).
    pub seq: u64,
    pub kind: String,
    pub at: OffsetDateTime,
    #[oai(skip_serializing_if_is_none)]
    pub user_id: Option<uuid::Uuid>,
    /// `admin:<id>` or `operator` when someone other than the account
    /// made the change.
    #[oai(skip_serializing_if_is_none)]
    pub actor: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub session_id: Option<uuid::Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub client_network: Option<String>,
    #[oai(skip_serializing_if_is_none)]
    pub detail: Option<String>,
}

impl From<AuditRecord> for AuditEntry {
    fn from(record: AuditRecord) -> Self {
        let event = record.event;
        Self {
            seq: record.seq,
            kind: event.kind.as_str().to_owned(),
            at: event.at,
            user_id: event.user.map(|u| u.0),
            actor: event.actor.map(|a| a.to_string()),
            session_id: event.session.map(|s| s.0),
            client_network: event.client,
            detail: event.detail,
        }
    }
}

/// One page of the audit log, newest first.
#[derive(Debug, Object)]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[oai(skip_serializing_if_is_none)]
    pub next_cursor: Option<String>,
}

/// An invite to create.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct NewInvite {
    /// How long the code stays valid, e.g. `7d` or `12h` (1 minute to 365
    /// days); the server's `--invite-ttl` when absent.
    #[oai(validator(max_length = 32), skip_serializing_if_is_none)]
    pub expires_in: Option<String>,
}

/// An invite.
#[derive(Debug, Object)]
pub struct Invite {
    pub id: uuid::Uuid,
    pub created_at: OffsetDateTime,
    pub expires_at: OffsetDateTime,
    /// `admin:<id>` or `operator`.
    pub created_by: String,
    /// The account that used it, if any.
    #[oai(skip_serializing_if_is_none)]
    pub used_by: Option<uuid::Uuid>,
    #[oai(skip_serializing_if_is_none)]
    pub used_at: Option<OffsetDateTime>,
}

impl From<InviteRecord> for Invite {
    fn from(invite: InviteRecord) -> Self {
        Self {
            id: invite.id.0,
            created_at: invite.created_at,
            expires_at: invite.expires_at,
            created_by: invite.created_by.to_string(),
            used_by: invite.used_by.map(|u| u.0),
            used_at: invite.used_at,
        }
    }
}

/// A new invite and its code, shown this once.
#[derive(Debug, Object)]
pub struct IssuedInvite {
    /// Give it to the person who will sign up, as `invite_code`. Only a
    /// hash is stored: it cannot be shown again.
    pub code: String,
    pub invite: Invite,
}

/// Invites, newest first.
#[derive(Debug, Object)]
pub struct InviteList {
    pub items: Vec<Invite>,
}

#[derive(ApiResponse)]
pub enum UserPageResponse {
    #[oai(status = 200)]
    Ok(Json<UserPage>),
}

#[derive(ApiResponse)]
pub enum UserResponse {
    #[oai(status = 200)]
    Ok(Json<AdminUser>),
}

#[derive(ApiResponse)]
pub enum UserCreatedResponse {
    /// The account exists; it has no session until it logs in.
    #[oai(status = 201)]
    Created(Json<AdminUser>),
}

#[derive(ApiResponse)]
pub enum DoneResponse {
    /// Done.
    #[oai(status = 204)]
    NoContent,
}

#[derive(ApiResponse)]
pub enum AuditPageResponse {
    #[oai(status = 200)]
    Ok(Json<AuditPage>),
}

#[derive(ApiResponse)]
pub enum InviteCreatedResponse {
    #[oai(status = 201)]
    Created(Json<IssuedInvite>),
}

#[derive(ApiResponse)]
pub enum InviteListResponse {
    #[oai(status = 200)]
    Ok(Json<InviteList>),
}

problem_responses! {
    pub enum AdminListError {
        /// A query parameter is invalid.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// You are not an admin.
        Forbidden = 403,
    }
}

problem_responses! {
    pub enum AdminWriteError {
        /// A field or the id is invalid.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// You are not an admin.
        Forbidden = 403,
        /// There is no such account.
        NotFound = 404,
        /// The change would leave no enabled admin, or the email is taken.
        Conflict = 409,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

problem_responses! {
    pub enum AdminActionError {
        /// The id is not a UUID.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// You are not an admin.
        Forbidden = 403,
        /// There is no such account or invite.
        NotFound = 404,
        /// The change would leave no enabled admin.
        Conflict = 409,
    }
}

fn default_limit() -> u32 {
    50
}

fn parse_role(raw: &str) -> Result<Role, Error> {
    Role::parse(raw).ok_or_else(|| FieldError::new("role", "must be `user` or `admin`").into())
}

fn new_password(raw: String) -> Result<Password, Error> {
    Ok(Password::parse(raw)?)
}

/// The caller as the actor of a change, once checked to be an admin.
async fn admin(state: &AppState, auth: &BearerAuth) -> Result<Actor, Error> {
    let admin = state.auth.require_admin(auth.0).await?;
    Ok(Actor::Admin(admin.id))
}

fn user_id(id: &Path<CanonicalId>) -> UserId {
    UserId(id.0.0)
}

/// A time given as RFC 3339, or a field error.
fn instant(raw: Option<&str>, field: &'static str) -> Result<Option<OffsetDateTime>, Error> {
    raw.map(|raw| {
        OffsetDateTime::parse(raw, &time::format_description::well_known::Rfc3339)
            .map_err(|_| FieldError::new(field, "is not an RFC 3339 time").into())
    })
    .transpose()
}

#[OpenApi(prefix_path = "/api/v1/admin", tag = "ApiTags::Admin")]
impl AdminApi {
    /// List accounts
    ///
    /// By email; `prefix` keeps the emails that start with it.
    #[oai(path = "/users", method = "get", operation_id = "adminListUsers")]
    async fn users(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Only emails that start with this (compared after the same
        /// folding as signup).
        #[oai(validator(max_length = 254))]
        prefix: Query<Option<String>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 400))]
        cursor: Query<Option<String>>,
    ) -> Result<UserPageResponse, AdminListError> {
        admin(&state, &auth).await?;
        let bad_cursor = || Error::from(FieldError::new("cursor", "is not a cursor from this API"));
        let after = match cursor.0 {
            Some(c) => {
                let raw = Base64UrlUnpadded::decode_vec(&c).map_err(|_| bad_cursor())?;
                Some(String::from_utf8(raw).map_err(|_| bad_cursor())?)
            }
            None => None,
        };
        let prefix = prefix
            .0
            .map(|p| crate::domain::fold_email(&p))
            .unwrap_or_default();
        let (users, next) = state.db.users_page(prefix, after, limit.0 as usize).await?;
        let mut items = Vec::with_capacity(users.len());
        for user in users {
            items.push(admin_user(&state, user).await?);
        }
        Ok(UserPageResponse::Ok(Json(UserPage {
            items,
            next_cursor: next.map(|email| Base64UrlUnpadded::encode_string(email.as_bytes())),
        })))
    }

    /// Create an account
    #[oai(path = "/users", method = "post", operation_id = "adminCreateUser")]
    async fn create_user(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<NewUser>,
    ) -> Result<UserCreatedResponse, AdminWriteError> {
        let actor = admin(&state, &auth).await?;
        let NewUser {
            email,
            password,
            role,
        } = body.0;
        let email = Email::parse(&email.0).map_err(Error::from)?;
        let password = new_password(password.0)?;
        let role = role.as_deref().map_or(Ok(Role::User), parse_role)?;
        let user = state.auth.create_user(actor, email, password, role).await?;
        Ok(UserCreatedResponse::Created(Json(
            admin_user(&state, user).await?,
        )))
    }

    /// One account
    #[oai(path = "/users/:id", method = "get", operation_id = "adminGetUser")]
    async fn user(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
    ) -> Result<UserResponse, AdminActionError> {
        admin(&state, &auth).await?;
        let user = state.db.user(user_id(&id)).await?.ok_or(Error::NotFound)?;
        Ok(UserResponse::Ok(Json(admin_user(&state, user).await?)))
    }

    /// Set an account's role
    ///
    /// Takes effect on the account's very next request. The last enabled
    /// admin cannot be demoted (409).
    #[oai(path = "/users/:id/role", method = "put", operation_id = "adminSetRole")]
    async fn set_role(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
        body: Json<RoleChange>,
    ) -> Result<UserResponse, AdminWriteError> {
        let actor = admin(&state, &auth).await?;
        let role = parse_role(&body.0.role)?;
        let user = state.auth.set_role(actor, user_id(&id), role).await?;
        Ok(UserResponse::Ok(Json(admin_user(&state, user).await?)))
    }

    /// Disable an account
    ///
    /// Every session ends at once (its tokens stop on their next request)
    /// and login is refused until it is enabled again. The last enabled
    /// admin cannot be disabled (409).
    #[oai(
        path = "/users/:id/disable",
        method = "post",
        operation_id = "adminDisableUser"
    )]
    async fn disable(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
    ) -> Result<DoneResponse, AdminActionError> {
        let actor = admin(&state, &auth).await?;
        state.auth.set_disabled(actor, user_id(&id), true).await?;
        Ok(DoneResponse::NoContent)
    }

    /// Enable an account
    #[oai(path = "/users/:id/enable", method = "post", operation_id = "adminEnableUser")]
    async fn enable(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
    ) -> Result<DoneResponse, AdminActionError> {
        let actor = admin(&state, &auth).await?;
        state.auth.set_disabled(actor, user_id(&id), false).await?;
        Ok(DoneResponse::NoContent)
    }

    /// End an account's sessions
    ///
    /// Every session of the account ends at once.
    #[oai(
        path = "/users/:id/sessions",
        method = "delete",
        operation_id = "adminEndUserSessions"
    )]
    async fn end_sessions(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
    ) -> Result<DoneResponse, AdminActionError> {
        let actor = admin(&state, &auth).await?;
        state.auth.end_user_sessions(actor, user_id(&id)).await?;
        Ok(DoneResponse::NoContent)
    }

    /// Reset an account's password
    ///
    /// Sets a new password (meeting the signup rules) and ends every
    /// session of the account.
    #[oai(
        path = "/users/:id/password",
        method = "put",
        operation_id = "adminResetPassword"
    )]
    async fn reset_password(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
        body: Json<PasswordReset>,
    ) -> Result<DoneResponse, AdminWriteError> {
        let actor = admin(&state, &auth).await?;
        let password = new_password(body.0.password.0)?;
        state.auth.reset_password(actor, user_id(&id), password).await?;
        Ok(DoneResponse::NoContent)
    }

    /// Delete an account
    ///
    /// The account, its notes and its sessions go in one transaction; its
    /// tokens stop at once and its email is free again. The last enabled
    /// admin cannot be deleted (409).
    #[oai(path = "/users/:id", method = "delete", operation_id = "adminDeleteUser")]
    async fn delete_user(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
    ) -> Result<DoneResponse, AdminActionError> {
        let actor = admin(&state, &auth).await?;
        state.auth.delete_user(actor, user_id(&id)).await?;
        Ok(DoneResponse::NoContent)
    }

    /// Read the audit log
    ///
    /// Newest first. A page reads a bounded number of records, so it may
    /// hold fewer than `limit` and still have a `next_cursor`: only its
    /// absence means the end.
    #[oai(path = "/audit", method = "get", operation_id = "adminListAudit")]
    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// Only this account's events.
        user: Query<Option<CanonicalId>>,
        /// Only events of this kind (e.g. `login_failed`).
        #[oai(validator(max_length = 32))]
        kind: Query<Option<String>>,
        /// Only events at or after this time (RFC 3339).
        #[oai(validator(max_length = 40))]
        since: Query<Option<String>>,
        /// Only events before this time (RFC 3339).
        #[oai(validator(max_length = 40))]
        until: Query<Option<String>>,
        /// Page size, 1 to 100.
        #[oai(
            default = "default_limit",
            validator(minimum(value = "1"), maximum(value = "100"))
        )]
        limit: Query<u32>,
        /// `next_cursor` from the previous page.
        #[oai(validator(max_length = 20))]
        cursor: Query<Option<String>>,
    ) -> Result<AuditPageResponse, AdminListError> {
        admin(&state, &auth).await?;
        let kinds = match kind.0.as_deref() {
            Some(name) => vec![
                AuditKind::parse(name)
                    .ok_or_else(|| Error::from(FieldError::new("kind", "is not an event kind")))?,
            ],
            None => Vec::new(),
        };
        let query = AuditQuery {
            user: user.0.map(|u| UserId(u.0)),
            kinds,
            since: instant(since.0.as_deref(), "since")?,
            until: instant(until.0.as_deref(), "until")?,
            before_seq: parse_event_cursor(cursor.0.as_deref())?,
            limit: limit.0 as usize,
            scan_limit: EVENT_SCAN_LIMIT,
        };
        let (records, next) = state.auth.audit_events(query).await?;
        Ok(AuditPageResponse::Ok(Json(AuditPage {
            items: records.into_iter().map(AuditEntry::from).collect(),
            next_cursor: next.map(|seq| seq.to_string()),
        })))
    }

    /// Create an invite
    ///
    /// A one-time signup code, for the `invite` signup policy. The code is
    /// in this answer only.
    #[oai(path = "/invites", method = "post", operation_id = "adminCreateInvite")]
    async fn create_invite(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<NewInvite>,
    ) -> Result<InviteCreatedResponse, AdminWriteError> {
        let actor = admin(&state, &auth).await?;
        let ttl = match body.0.expires_in.as_deref() {
            Some(raw) => Some(parse_invite_ttl(raw)?),
            None => None,
        };
        let issued = state.auth.create_invite(actor, ttl).await?;
        Ok(InviteCreatedResponse::Created(Json(IssuedInvite {
            code: issued.code,
            invite: issued.invite.into(),
        })))
    }

    /// List invites
    ///
    /// The newest 100, used or not; never their codes.
    #[oai(path = "/invites", method = "get", operation_id = "adminListInvites")]
    async fn invites(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> Result<InviteListResponse, AdminListError> {
        admin(&state, &auth).await?;
        let invites = state.db.invites(100).await?;
        Ok(InviteListResponse::Ok(Json(InviteList {
            items: invites.into_iter().map(Invite::from).collect(),
        })))
    }

    /// Withdraw an invite
    #[oai(path = "/invites/:id", method = "delete", operation_id = "adminDeleteInvite")]
    async fn delete_invite(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The invite's id.
        id: Path<CanonicalId>,
    ) -> Result<DoneResponse, AdminActionError> {
        let actor = admin(&state, &auth).await?;
        state.auth.delete_invite(actor, InviteId(id.0.0)).await?;
        Ok(DoneResponse::NoContent)
    }
}

/// An invite's life: a duration such as `7d`, between 1 minute and 365
/// days.
pub fn parse_invite_ttl(raw: &str) -> Result<std::time::Duration, Error> {
    let ttl = humantime::parse_duration(raw)
        .map_err(|_| FieldError::new("expires_in", "is not a duration such as `7d`"))?;
    if ttl < std::time::Duration::from_secs(60) || ttl > std::time::Duration::from_secs(365 * 86_400) {
        return Err(FieldError::new("expires_in", "must be between 1m and 365d").into());
    }
    Ok(ttl)
}
