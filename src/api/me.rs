//! `/api/v1/me`: the caller's own account.

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::security::BearerAuth;
use super::{ApiTags, AppState, Text};
use crate::domain::Password;
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
}

impl From<&UserRecord> for UserProfile {
    fn from(user: &UserRecord) -> Self {
        Self {
            id: user.id.0,
            email: user.email.clone(),
            role: user.role.as_str().to_owned(),
            created_at: user.created_at,
        }
    }
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

crate::field_parsers! {
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
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

/// A password from a request member, its errors named after that member.
fn password_member(raw: String, field: &str) -> Result<Password, FieldError> {
    Password::parse(raw).map_err(|e| FieldError::new(field, e.message))
}

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
        Ok(ProfileResponse::Ok(Json(UserProfile::from(&user))))
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
