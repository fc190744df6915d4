//! `/api/v1/auth`: signup, login, refresh, logout and the public keys.

use crate::metrics::AuthEvent;
use std::sync::Arc;

use poem::Request;
use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};
use time::OffsetDateTime;

use super::me::UserProfile;
use super::security::BearerAuth;
use super::{ApiTags, AppState, Text};
use crate::auth::{LoginAttempt, Origin, TokenPair};
use crate::domain::{Email, Password};
use crate::error::{Error, FieldError};
use crate::problem_responses;

pub struct AuthApi;

/// Credentials for signup.
#[derive(Object)]
#[oai(deny_unknown_fields, example)]
pub struct SignupRequest {
    /// Email address (`idn-email`, but for quoted local parts and address
    /// literals, which are refused): a dot-atom local part of letters,
    /// digits and RFC 5322 `atext` punctuation, `@`, and a domain of labels
    /// of letters, digits and inner hyphens. Compared after Unicode NFKC
    /// case folding (`ALICE` and `ａlice` are `alice`); at most 254
    /// characters once folded.
    #[oai(deserialize_with = "email_field", validator(min_length = 3, max_length = 254))]
    pub email: Text,
    /// 8 to 1024 characters, not a common or easily guessed password.
    #[oai(
        deserialize_with = "password_field",
        validator(min_length = 8, max_length = 1024)
    )]
    pub password: Text,
    /// A one-time code from an admin; needed when the server's signup
    /// policy is `invite`, ignored otherwise.
    #[oai(
        deserialize_with = "invite_code_field",
        validator(max_length = 128),
        skip_serializing_if_is_none
    )]
    pub invite_code: Option<Text>,
}

/// Never shows the password or the invite code.
impl std::fmt::Debug for SignupRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignupRequest").finish_non_exhaustive()
    }
}

impl poem_openapi::types::Example for SignupRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: "plaid otter cathedral".into(),
            invite_code: None,
        }
    }
}

/// Credentials for login.
#[derive(Object)]
#[oai(deny_unknown_fields, example)]
pub struct LoginRequest {
    /// Email address of the account.
    #[oai(deserialize_with = "email_field", validator(max_length = 254))]
    pub email: Text,
    /// The account's password.
    #[oai(deserialize_with = "password_field", validator(max_length = 1024))]
    pub password: Text,
    /// The `device_token` of an earlier login or signup on this device.
    /// With it, failed guesses from other clients do not hold this login
    /// back (they make the account back off for unknown clients only).
    #[oai(
        deserialize_with = "device_token_field",
        validator(max_length = 128),
        skip_serializing_if_is_none
    )]
    pub device_token: Option<Text>,
}

/// Never shows the password.
impl std::fmt::Debug for LoginRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginRequest").finish_non_exhaustive()
    }
}

impl poem_openapi::types::Example for LoginRequest {
    fn example() -> Self {
        Self {
            email: "ada@example.com".into(),
            password: "plaid otter cathedral".into(),
            device_token: None,
        }
    }
}

/// A refresh token to exchange.
#[derive(Debug, Object)]
#[oai(deny_unknown_fields)]
pub struct RefreshRequest {
    /// The `refresh_token` of the last token pair.
    #[oai(deserialize_with = "refresh_token_field", validator(max_length = 128))]
    pub refresh_token: Text,
}

crate::field_parsers! {
    email_field: Text => "email";
    password_field: Text => "password";
    refresh_token_field: Text => "refresh_token";
    device_token_field: Option<Text> => "device_token";
    invite_code_field: Option<Text> => "invite_code";
}

/// An access token and the refresh token that renews it.
#[derive(Debug, Object)]
pub struct TokenPairBody {
    /// PASETO v4.public; send as `Authorization: Bearer <access_token>`.
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: String,
    /// Seconds until the access token expires.
    pub expires_in: i64,
    /// When the access token expires.
    pub expires_at: OffsetDateTime,
    /// Opaque; exchange at `/api/v1/auth/refresh`. Works once.
    pub refresh_token: String,
    /// The session these tokens belong to.
    pub session_id: uuid::Uuid,
    /// With login and signup: keep it and send it with the next login from
    /// this device, so guesses from elsewhere cannot lock you out.
    #[oai(skip_serializing_if_is_none)]
    pub device_token: Option<String>,
}

impl TokenPairBody {
    pub(crate) fn new(pair: TokenPair) -> Self {
        Self {
            expires_in: (pair.access_expires_at - pair.access_issued_at)
                .whole_seconds()
                .max(0),
            access_token: pair.access_token,
            token_type: "Bearer".into(),
            expires_at: pair.access_expires_at,
            refresh_token: pair.refresh_token,
            session_id: pair.session_id.0,
            device_token: pair.device_token,
        }
    }
}

/// A new account and its first tokens.
#[derive(Debug, Object)]
pub struct SignupBody {
    pub user: UserProfile,
    pub tokens: TokenPairBody,
}

/// One token-verification key.
#[derive(Debug, Object)]
pub struct PublicKey {
    /// PASERK `k4.pid` of the key; the `kid` in a token's footer.
    pub kid: String,
    /// PASERK `k4.public`: the Ed25519 public key.
    pub paserk: String,
    /// When the key was made.
    pub created_at: OffsetDateTime,
}

/// Keys that verify access tokens.
#[derive(Debug, Object)]
pub struct KeySet {
    /// Every key currently accepted, newest last.
    pub keys: Vec<PublicKey>,
}

#[derive(ApiResponse)]
pub enum SignupResponse {
    /// The account was created and logged in.
    #[oai(status = 201)]
    Created(Json<SignupBody>),
}

problem_responses! {
    pub enum SignupError {
        /// A field is invalid, or the password is too easy to guess.
        BadRequest = 400,
        /// The signup policy refuses it (`urn:notesd:problem:signup-refused`):
        /// signup is closed, or it needs a valid, unused, unexpired
        /// `invite_code`.
        Forbidden = 403,
        /// The email cannot be used for a new account.
        Conflict = 409,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

#[derive(ApiResponse)]
pub enum TokensResponse {
    /// A new token pair.
    #[oai(status = 200)]
    Ok(Json<TokenPairBody>),
}

problem_responses! {
    pub enum LoginError {
        /// The body is malformed.
        BadRequest = 400,
        /// The email or password is wrong (one answer for both).
        Unauthorized = 401,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

problem_responses! {
    pub enum RefreshError {
        /// The body is malformed.
        BadRequest = 400,
        /// The refresh token is unknown, used, expired or revoked.
        Unauthorized = 401,
        /// The body is not `application/json`.
        UnsupportedMediaType = 415,
    }
}

#[derive(ApiResponse)]
pub enum LogoutResponse {
    /// The session is over; its tokens no longer work.
    #[oai(status = 204)]
    NoContent,
}

problem_responses! {
    pub enum AuthOnlyError {
        /// Missing, invalid, expired or revoked access token.
        Unauthorized = 401,
    }
}

#[derive(ApiResponse)]
pub enum KeysResponse {
    /// The verification keys.
    #[oai(status = 200)]
    Ok(Json<KeySet>),
}

problem_responses! {
    pub enum NoError {}
}

/// The request's `User-Agent`, if it is text.
fn user_agent(req: &Request) -> Option<String> {
    let value = req.headers().get(poem::http::header::USER_AGENT)?;
    value.to_str().ok().map(str::to_owned)
}

/// Where a session opened by this request comes from.
fn origin(state: &AppState, req: &Request) -> Origin {
    Origin {
        client: state.clients.client_key(req),
        user_agent: user_agent(req),
    }
}

#[OpenApi(prefix_path = "/api/v1/auth", tag = "ApiTags::Auth")]
impl AuthApi {
    /// Create an account
    ///
    /// Creates an account with role `user` and logs it in. The email is
    /// trimmed and lower-cased. The server's signup policy decides who may:
    /// anyone (`open`), holders of an admin's one-time `invite_code`
    /// (`invite`; the code is checked before the email, and a taken email
    /// leaves the code unused), or nobody (`closed`).
    #[oai(path = "/signup", method = "post", operation_id = "signup")]
    async fn signup(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<SignupRequest>,
    ) -> Result<SignupResponse, SignupError> {
        let SignupRequest {
            email,
            password,
            invite_code,
        } = body.0;
        let (email, password) = parse_credentials(&email.0, password.0)?;
        let invite = invite_code.map(|c| c.0);
        let (user, pair) = state
            .auth
            .signup(email, password, origin(&state, req), invite.as_deref())
            .await?;
        state.auth.events.record(AuthEvent::Signup);
        Ok(SignupResponse::Created(Json(SignupBody {
            user: UserProfile::from(&user),
            tokens: TokenPairBody::new(pair),
        })))
    }

    /// Log in
    ///
    /// Checks the credentials and opens a session. Any wrong credential gets
    /// the same 401, in the same time, whether or not the account exists.
    /// For an account with two-factor login on, a right password answers
    /// 202 with an `mfa_token` for `/api/v1/auth/login/mfa` instead.
    #[oai(path = "/login", method = "post", operation_id = "login")]
    async fn login(
        &self,
        req: &Request,
        state: Data<&Arc<AppState>>,
        body: Json<LoginRequest>,
    ) -> Result<super::mfa::LoginResponse, LoginError> {
        let LoginRequest {
            email,
            password,
            device_token,
        } = body.0;
        // A malformed email or an out-of-policy password cannot belong to an
        // account, but still costs a (dummy) hash so it answers like one.
        let Ok((email, password)) = parse_credentials(&email.0, password.0) else {
            let filler = Password::parse("x".repeat(16)).map_err(Error::from)?;
            state.auth.passwords.verify(filler, None).await?;
            state.auth.events.record(AuthEvent::LoginFailed);
            return Err(Error::Unauthorized.into());
        };
        let outcome = state
            .auth
            .login(LoginAttempt {
                email,
                password,
                device_token: device_token.map(|t| t.0),
                client: state.clients.client_key(req),
                user_agent: user_agent(req),
            })
            .await;
        let event = match &outcome {
            Ok(crate::auth::mfa::LoginOutcome::Tokens(_)) => Some(AuthEvent::LoginSucceeded),
            Err(Error::Unauthorized) => Some(AuthEvent::LoginFailed),
            Err(Error::TooManyRequests { .. }) => Some(AuthEvent::LoginBackedOff),
            // A password step waiting for its factor: the second step
            // counts the login.
            Ok(crate::auth::mfa::LoginOutcome::SecondFactor { .. }) | Err(_) => None,
        };
        if let Some(event) = event {
            state.auth.events.record(event);
        }
        let outcome = outcome?;
        let now = state.auth.clock.now();
        Ok(super::mfa::LoginResponse::from_outcome(outcome, now))
    }

    /// Renew tokens
    ///
    /// Exchanges the refresh token for a new pair; the old refresh token
    /// stops working. Presenting an already-exchanged refresh token is taken
    /// as theft and ends the whole session.
    #[oai(path = "/refresh", method = "post", operation_id = "refresh")]
    async fn refresh(
        &self,
        state: Data<&Arc<AppState>>,
        body: Json<RefreshRequest>,
    ) -> Result<TokensResponse, RefreshError> {
        let outcome = state.auth.refresh(&body.0.refresh_token.0).await;
        match &outcome {
            Ok(_) => state.auth.events.record(AuthEvent::Refreshed),
            Err(Error::Unauthorized) => state.auth.events.record(AuthEvent::RefreshFailed),
            Err(_) => {}
        }
        let pair = outcome?;
        Ok(TokensResponse::Ok(Json(TokenPairBody::new(pair))))
    }

    /// Log out
    ///
    /// Ends the session of the access token: its refresh token and all its
    /// access tokens stop working at once.
    #[oai(path = "/logout", method = "post", operation_id = "logout")]
    async fn logout(
        &self,
        state: Data<&Arc<AppState>>,
        auth: BearerAuth,
    ) -> Result<LogoutResponse, AuthOnlyError> {
        state.auth.logout(auth.0).await?;
        state.auth.events.record(AuthEvent::Logout);
        Ok(LogoutResponse::NoContent)
    }

    /// Token verification keys
    ///
    /// The Ed25519 public keys, as PASERK `k4.public`, that verify access
    /// tokens. The token footer's `kid` names the key.
    #[oai(path = "/keys", method = "get", operation_id = "listKeys")]
    async fn keys(&self, state: Data<&Arc<AppState>>) -> Result<KeysResponse, NoError> {
        let keys = state
            .auth
            .tokens
            .public_keys(state.auth.clock.now())
            .map_err(Error::internal)?
            .into_iter()
            .map(|(kid, paserk, created_at)| PublicKey {
                kid,
                paserk,
                created_at,
            })
            .collect();
        Ok(KeysResponse::Ok(Json(KeySet { keys })))
    }
}

fn parse_credentials(email: &str, password: String) -> Result<(Email, Password), Error> {
    let email = Email::parse(email);
    let password = Password::parse(password);
    match (email, password) {
        (Ok(e), Ok(p)) => Ok((e, p)),
        (e, p) => {
            let errors: Vec<FieldError> = [e.err(), p.err()].into_iter().flatten().collect();
            Err(Error::Validation(errors))
        }
    }
}
