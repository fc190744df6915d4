//! Two-factor login (TOTP): enrolment, confirmation, recovery codes and
//! turning it off under `/api/v1/me/mfa`, the login's second step at
//! `/api/v1/auth/login/mfa`, and an admin's reset. See [`crate::auth::mfa`].

use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::param::Path;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::auth::{TokenPairBody, TokensResponse};
use super::security::BearerAuth;
use super::text::CanonicalId;
use super::{ApiTags, AppState, Text};
use crate::audit::Actor;
use crate::domain::{Password, UserId};
use crate::error::{Error, FieldError};
use crate::metrics::AuthEvent;
use crate::problem_responses;

pub struct MfaApi;

/// The account's password, re-entered.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct PasswordOnly {
    /// The account's password.
    #[oai(deserialize_with = "password_field", validator(max_length = 1024))]
    pub password: Text,
}

/// A code from the authenticator app.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct CodeOnly {
    /// The 6-digit code the app shows now.
    #[oai(deserialize_with = "code_field", validator(max_length = 64))]
    pub code: Text,
}

/// The password and a code: the app's 6 digits, or a recovery code.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct PasswordAndCode {
    /// The account's password.
    #[oai(deserialize_with = "password_field", validator(max_length = 1024))]
    pub password: Text,
    /// The 6-digit code the app shows now, or an unused recovery code.
    #[oai(deserialize_with = "code_field", validator(max_length = 64))]
    pub code: Text,
}

/// A login's second step.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct SecondStep {
    /// The `mfa_token` the password step answered with.
    #[oai(deserialize_with = "mfa_token_field", validator(max_length = 128))]
    pub mfa_token: Text,
    /// The 6-digit code the app shows now, or an unused recovery code.
    #[oai(deserialize_with = "code_field", validator(max_length = 64))]
    pub code: Text,
}

crate::field_parsers! {
    password_field: Text => "password";
    code_field: Text => "code";
    mfa_token_field: Text => "mfa_token";
}

macro_rules! secret_debug {
    ($($name:ident),*) => {$(
        /// Never shows the password or the code.
        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($name)).finish_non_exhaustive()
            }
        }
    )*};
}
secret_debug!(PasswordOnly, CodeOnly, PasswordAndCode, SecondStep);

/// A pending enrolment: add it to an authenticator app, then confirm it
/// with a code. Shown once; the secret is never shown again.
#[derive(Object)]
pub struct TotpEnrolment {
    /// The secret in base32, for typing into an app.
    pub secret: String,
    /// `otpauth://totp/...` (SHA-1, 6 digits, 30 s), what apps import.
    pub otpauth_uri: String,
    /// The URI as a QR code, an SVG document.
    pub qr_svg: String,
}

impl std::fmt::Debug for TotpEnrolment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpEnrolment").finish_non_exhaustive()
    }
}

/// One-time recovery codes, shown once: each logs in once in place of a
/// code from the app.
#[derive(Object)]
pub struct RecoveryCodes {
    pub recovery_codes: Vec<String>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryCodes").finish_non_exhaustive()
    }
}

/// The password was right; the login needs its second factor.
#[derive(Object)]
pub struct MfaChallenge {
    /// Always `true`.
    pub mfa_required: bool,
    /// Send it with a code to `/api/v1/auth/login/mfa`. Good for
    /// `expires_in` seconds and a few codes; it is not an access token.
    pub mfa_token: String,
    pub expires_in: i64,
    pub expires_at: OffsetDateTime,
}

impl std::fmt::Debug for MfaChallenge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MfaChallenge").finish_non_exhaustive()
    }
}

#[derive(ApiResponse)]
pub enum EnrolmentResponse {
    /// A new secret, pending until confirmed.
    #[oai(status = 201)]
    Created(Json<TotpEnrolment>),
}

#[derive(ApiResponse)]
pub enum RecoveryCodesResponse {
    /// The factor is on (or the codes are new): keep these codes.
    #[oai(status = 200)]
    Ok(Json<RecoveryCodes>),
}

#[derive(ApiResponse)]
pub enum MfaOffResponse {
    /// The factor is off (or reset): logins need the password only.
    #[oai(status = 204)]
    NoContent,
}

/// What a login's first step answers.
#[derive(ApiResponse)]
pub enum LoginResponse {
    /// Logged in: a new token pair.
    #[oai(status = 200)]
    Ok(Json<TokenPairBody>),
    /// The password was right and the account has two-factor login on:
    /// send a code with the `mfa_token` to `/api/v1/auth/login/mfa`.
    #[oai(status = 202)]
    MfaRequired(Json<MfaChallenge>),
}

impl LoginResponse {
    pub fn from_outcome(outcome: crate::auth::mfa::LoginOutcome, now: OffsetDateTime) -> Self {
        match outcome {
            crate::auth::mfa::LoginOutcome::Tokens(pair) => Self::Ok(Json(TokenPairBody::new(pair))),
            crate::auth::mfa::LoginOutcome::SecondFactor {
                mfa_token,
                expires_at,
            } => Self::MfaRequired(Json(MfaChallenge {
                mfa_required: true,
                mfa_token,
                expires_in: (expires_at - now).whole_seconds().max(0),
                expires_at,
            })),
        }
    }
}

problem_responses! {
    pub enum MfaChangeError {
        /// A field is malformed, the password is wrong, or the code is
        /// wrong or used already.
        BadRequest = 400,
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// The factor is not in the state this needs (already on, not on,
        /// or no enrolment pending).
        Conflict = 409,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

problem_responses! {
    pub enum SecondStepError {
        /// The body is malformed.
        BadRequest = 400,
        /// The MFA token is unknown, used up or expired, or the code is
        /// wrong or was used already (one answer for all).
        Unauthorized = 401,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

problem_responses! {
    pub enum MfaResetError {
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
        /// The caller is not an admin.
        Forbidden = 403,
        /// No such account, or it has no second factor.
        NotFound = 404,
    }
}

fn password(text: Text) -> Result<Password, Error> {
    Password::parse(text.0).map_err(|e| FieldError::new("password", e.message).into())
}

#[OpenApi]
impl MfaApi {
    /// Start two-factor login
    ///
    /// Needs your password. Returns a new TOTP secret (160 bits), its
    /// `otpauth://` URI and a QR code of it: add it to an authenticator
    /// app, then confirm with a code. Until confirmed nothing changes; a
    /// new call replaces a pending secret. 409 while the factor is on.
    #[oai(
        path = "/api/v1/me/mfa/totp",
        method = "post",
        operation_id = "enrolTotp",
        tag = "ApiTags::Me"
    )]
    async fn enrol(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<PasswordOnly>,
    ) -> Result<EnrolmentResponse, MfaChangeError> {
        let password = password(body.0.password)?;
        let client = state.clients.client_key(req);
        let enrolment = state.auth.enrol_totp(auth.0, password, client).await?;
        Ok(EnrolmentResponse::Created(Json(TotpEnrolment {
            secret: enrolment.secret,
            otpauth_uri: enrolment.uri,
            qr_svg: enrolment.qr_svg,
        })))
    }

    /// Confirm two-factor login
    ///
    /// With a code from the app, turns the pending factor on: from now on
    /// a login needs a code after the password. Returns ten one-time
    /// recovery codes, shown this once. Wrong codes count toward the
    /// login backoff (429 while it backs off).
    #[oai(
        path = "/api/v1/me/mfa/totp/confirm",
        method = "post",
        operation_id = "confirmTotp",
        tag = "ApiTags::Me"
    )]
    async fn confirm(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<CodeOnly>,
    ) -> Result<RecoveryCodesResponse, MfaChangeError> {
        let client = state.clients.client_key(req);
        let codes = state.auth.confirm_totp(auth.0, &body.0.code.0, client).await?;
        Ok(RecoveryCodesResponse::Ok(Json(RecoveryCodes {
            recovery_codes: codes,
        })))
    }

    /// Turn two-factor login off
    ///
    /// Needs your password and a code from the app (or a recovery code).
    #[oai(
        path = "/api/v1/me/mfa/totp/disable",
        method = "post",
        operation_id = "disableTotp",
        tag = "ApiTags::Me"
    )]
    async fn disable(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<PasswordAndCode>,
    ) -> Result<MfaOffResponse, MfaChangeError> {
        let PasswordAndCode { password: pw, code } = body.0;
        let client = state.clients.client_key(req);
        state
            .auth
            .disable_totp(auth.0, password(pw)?, &code.0, client)
            .await?;
        Ok(MfaOffResponse::NoContent)
    }

    /// New recovery codes
    ///
    /// Needs your password and a code from the app (or a recovery code).
    /// Ten new one-time codes replace every old one; shown this once.
    #[oai(
        path = "/api/v1/me/mfa/recovery-codes",
        method = "post",
        operation_id = "newRecoveryCodes",
        tag = "ApiTags::Me"
    )]
    async fn new_recovery_codes(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        body: Json<PasswordAndCode>,
    ) -> Result<RecoveryCodesResponse, MfaChangeError> {
        let PasswordAndCode { password: pw, code } = body.0;
        let client = state.clients.client_key(req);
        let codes = state
            .auth
            .regenerate_recovery_codes(auth.0, password(pw)?, &code.0, client)
            .await?;
        Ok(RecoveryCodesResponse::Ok(Json(RecoveryCodes {
            recovery_codes: codes,
        })))
    }

    /// Log in: second step
    ///
    /// The `mfa_token` of the password step and a code from the app (or a
    /// recovery code, each good once) complete the login. Each code of the
    /// app works once; wrong codes count toward the login backoff like
    /// wrong passwords (429 while it backs off).
    #[oai(
        path = "/api/v1/auth/login/mfa",
        method = "post",
        operation_id = "loginSecondFactor",
        tag = "ApiTags::Auth"
    )]
    async fn second_step(
        &self,
        state: Data<&Arc<AppState>>,
        body: Json<SecondStep>,
    ) -> Result<TokensResponse, SecondStepError> {
        let SecondStep { mfa_token, code } = body.0;
        let outcome = state.auth.login_second_step(&mfa_token.0, &code.0).await;
        let event = match &outcome {
            Ok(_) => Some(AuthEvent::LoginSucceeded),
            Err(Error::Unauthorized) => Some(AuthEvent::LoginFailed),
            Err(Error::TooManyRequests { .. }) => Some(AuthEvent::LoginBackedOff),
            Err(_) => None,
        };
        if let Some(event) = event {
            state.auth.events.record(event);
        }
        Ok(TokensResponse::Ok(Json(TokenPairBody::new(outcome?))))
    }

    /// Reset a user's second factor
    ///
    /// For a user who lost their device: removes the factor (on or
    /// pending), so their next login needs the password only. Audited.
    #[oai(
        path = "/api/v1/admin/users/:id/mfa",
        method = "delete",
        operation_id = "adminResetMfa",
        tag = "ApiTags::Admin"
    )]
    async fn reset(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
        /// The account's id.
        id: Path<CanonicalId>,
    ) -> Result<MfaOffResponse, MfaResetError> {
        let admin = state.auth.require_admin(auth.0).await?;
        state
            .auth
            .reset_mfa(Actor::Admin(admin.id), UserId(id.0.0))
            .await?;
        Ok(MfaOffResponse::NoContent)
    }
}
