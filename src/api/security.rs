//! The bearer security scheme: turns `Authorization: Bearer <token>` into an
//! [`AuthUser`], or a 401. Tokens are read from this header only, never from
//! a query string or a cookie.

use std::sync::Arc;

use poem::Request;
use poem_openapi::SecurityScheme;
use poem_openapi::auth::Bearer;

use super::AppState;
use crate::auth::AuthUser;

/// A PASETO v4.public access token from `POST /api/v1/auth/login`.
#[derive(SecurityScheme)]
#[oai(ty = "bearer", bearer_format = "PASETO v4.public", checker = "check_bearer")]
pub struct BearerAuth(pub AuthUser);

async fn check_bearer(req: &Request, bearer: Bearer) -> Option<AuthUser> {
    let state = req.data::<Arc<AppState>>()?;
    state.auth.authenticate(&bearer.token)
}
