//! One span and one log line per request.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use tracing::Instrument;

/// Request ids: a random start (so ids differ across restarts) counted up.
/// They only need to be unique, not secret, so no system call per request.
static NEXT_ID: LazyLock<AtomicU64> = LazyLock::new(|| {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    AtomicU64::new(u64::from_le_bytes(seed))
});

fn next_request_id() -> String {
    format!("{:016x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// One span and one log line per request: request id, method, the
/// operation (a low-cardinality route name, never the raw path, which can
/// hold ids or search text), status and latency.
pub async fn log_request<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let request_id = next_request_id();
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
