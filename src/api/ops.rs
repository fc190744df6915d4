//! Liveness and readiness probes.

use std::sync::Arc;

use poem::web::Data;
use poem_openapi::payload::Json;
use poem_openapi::{ApiResponse, Object, OpenApi};

use super::{ApiTags, AppState};
use crate::storage::Storage;

pub struct OpsApi;

/// A probe's answer.
#[derive(Debug, Object)]
pub struct Health {
    /// `ok`, or `unavailable` when a dependency fails.
    pub status: String,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The process is up.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// Ready to serve: the database answers.
    #[oai(status = 200)]
    Ready(Json<Health>),
    /// Not ready: the database does not answer.
    #[oai(status = 503)]
    Unavailable(Json<Health>),
}

crate::problem_responses! {
    /// A probe is answered unless the request itself is refused (headers
    /// too large, a method other than GET).
    pub enum ProbeError {}
}

#[OpenApi(tag = "ApiTags::Operations")]
impl OpsApi {
    /// Liveness
    #[oai(path = "/healthz", method = "get", operation_id = "healthz")]
    async fn healthz(&self) -> Result<HealthResponse, ProbeError> {
        Ok(HealthResponse::Ok(Json(Health { status: "ok".into() })))
    }

    /// Readiness
    #[oai(path = "/readyz", method = "get", operation_id = "readyz")]
    async fn readyz(&self, state: Data<&Arc<AppState>>) -> Result<ReadyResponse, ProbeError> {
        Ok(match state.db.ping().await {
            Ok(()) => ReadyResponse::Ready(Json(Health { status: "ok".into() })),
            Err(e) => {
                tracing::warn!(error = %e, "readiness check failed");
                ReadyResponse::Unavailable(Json(Health {
                    status: "unavailable".into(),
                }))
            }
        })
    }
}
