//! Request ids and the one log line per request.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use poem::Response;
use poem::http::HeaderValue;
use poem_openapi::OperationId;

/// Request ids: a random start (so ids differ across restarts) counted up.
/// They only need to be unique, not secret, so no system call per request.
static NEXT_ID: LazyLock<AtomicU64> = LazyLock::new(|| {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    AtomicU64::new(u64::from_le_bytes(seed))
});

pub fn next_request_id() -> String {
    format!("{:016x}", NEXT_ID.fetch_add(1, Ordering::Relaxed))
}

/// Logs the request's outcome: the operation (a low-cardinality name, never
/// the raw path, which can hold ids or search text), status and latency;
/// and returns the request id to the client.
pub fn finish(resp: &mut Response, request_id: &str, started: Instant) {
    let route = resp.data::<OperationId>().map_or("unmatched", |op| op.0);
    tracing::Span::current().record("route", route);
    tracing::info!(
        status = resp.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    if let Ok(value) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert("x-request-id", value);
    }
}
