//! One span and one log line per request.

use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use tracing::Instrument;

/// One span and one log line per request: request id, method, the
/// operation (a low-cardinality route name, never the raw path, which can
/// hold ids or search text), status and latency.
pub async fn log_request<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let mut id = [0u8; 8];
    let _ = getrandom::fill(&mut id);
    let request_id = format!("{:016x}", u64::from_be_bytes(id));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let mut resp = next.get_response(req).await.into_response();
        let route = resp.data::<OperationId>().map_or("unmatched", |op| op.0);
        tracing::Span::current().record("route", route);
        tracing::info!(
            status = resp.status().as_u16(),
            latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            "request"
        );
        if let Ok(value) = request_id.parse() {
            resp.headers_mut().insert("x-request-id", value);
        }
        Ok(resp)
    }
    .instrument(span)
    .await
}
