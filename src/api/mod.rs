//! The HTTP API, one module per resource; this root joins them into one
//! OpenAPI service and holds what they share. Operations reach the shared
//! [`AppState`] through poem's `Data`, so the service (and the OpenAPI
//! document) can be built without a running server.

pub mod auth;
pub mod me;
pub mod notes;
pub mod ops;
pub mod payload;
pub mod security;
pub mod text;

pub use text::Text;

use poem_openapi::{OpenApiService, Tags};

use crate::auth::Auth;
use crate::db::Db;

/// What every operation can reach.
pub struct AppState {
    pub auth: Auth,
    pub db: Db,
    pub notes: notes::NotesConfig,
    /// Who the client of a request is (for the login backoff).
    pub clients: crate::client::ClientResolver,
}

#[derive(Tags)]
pub enum ApiTags {
    /// Accounts, sessions and tokens.
    Auth,
    /// The caller's own account.
    Me,
    /// The caller's notes.
    Notes,
    /// Health and readiness probes.
    Operations,
}

pub type Apis = (auth::AuthApi, me::MeApi, notes::NotesApi, ops::OpsApi);

/// The OpenAPI service for all operations.
pub fn service() -> OpenApiService<Apis, ()> {
    OpenApiService::new(
        (auth::AuthApi, me::MeApi, notes::NotesApi, ops::OpsApi),
        "notesd",
        env!("CARGO_PKG_VERSION"),
    )
    .description(
        "A secure notes API in one executable.\n\nSign up or log in under **Auth**, press *Authorize* and paste the \
         `access_token`. Access tokens are PASETO v4.public and are read only \
         from the `Authorization: Bearer` header. Errors are \
         `application/problem+json` (RFC 9457).",
    )
    .license(poem_openapi::LicenseObject::new("MIT"))
}

/// The OpenAPI document as JSON, as `notesd openapi` prints it.
pub fn spec_json() -> String {
    service().spec()
}
