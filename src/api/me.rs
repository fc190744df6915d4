//! `/api/v1/me`: the caller's own account.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::security::BearerAuth;
use super::{ApiTags, AppState};
use crate::error::Error;
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
}
