//! Request ids and the one log line per request.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use poem::Response;
use poem::http::{HeaderName, HeaderValue};
use poem_openapi::OperationId;

static REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Request ids: a random start (so ids differ across restarts) counted up.
/// They only need to be unique, not secret, so no system call per request.
static NEXT_ID: LazyLock<AtomicU64> = LazyLock::new(|| {
    let mut seed = [0u8; 8];
    let _ = getrandom::fill(&mut seed);
    AtomicU64::new(u64::from_le_bytes(seed))
});

/// A request's id, shown as 16 hex digits.
#[derive(Debug, Clone, Copy)]
pub struct RequestId(u64);

impl RequestId {
    pub fn next() -> Self {
        Self(NEXT_ID.fetch_add(1, Ordering::Relaxed))
    }

    /// The id as a header value, written straight into its bytes.
    fn header_value(self) -> HeaderValue {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0u8; 16];
        for (i, digit) in digits.iter_mut().enumerate() {
            let nibble = (self.0 >> (60 - 4 * i)) & 0xf;
            *digit = HEX[usize::try_from(nibble).unwrap_or(0)];
        }
        HeaderValue::from_bytes(&digits).unwrap_or_else(|_| HeaderValue::from_static("0"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Logs the request's outcome: the operation (a low-cardinality name, never
/// the raw path, which can hold ids or search text), status and latency;
/// and returns the request id to the client.
pub fn finish(resp: &mut Response, request_id: RequestId, started: Instant) {
    let route = resp.data::<OperationId>().map_or("unmatched", |op| op.0);
    tracing::Span::current().record("route", route);
    tracing::info!(
        status = resp.status().as_u16(),
        latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        "request"
    );
    resp.headers_mut()
        .insert(REQUEST_ID.clone(), request_id.header_value());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_is_the_same_sixteen_hex_digits_in_the_header_and_the_log() {
        for n in [0, 1, 0xdead_beef, u64::MAX, 0x0123_4567_89ab_cdef] {
            let id = RequestId(n);
            assert_eq!(id.header_value().to_str().unwrap(), id.to_string());
            assert_eq!(id.to_string(), format!("{n:016x}"));
        }
    }
}
