//! What happens to every request around the routes, in one layer: a
//! request id and span, the body limit, turning any error into
//! problem+json, response headers, and one log line.
//!
//! It is one `around` function rather than a stack of middlewares on
//! purpose: each poem layer wraps (and moves) the whole request future, and
//! on a note read those copies were a measurable part of the cost.

pub mod buffers;
pub mod cors;
pub mod headers;
pub mod limits;
pub mod rate_limit;
pub mod trace;

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use poem::http::{HeaderMap, StatusCode, Version, header};
use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::error::{Error, problem_response};
use crate::server::{Connection, RequestContext};

/// Per-request limits the front layer enforces.
#[derive(Clone)]
pub struct FrontConfig {
    pub max_body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub max_header_bytes: usize,
    pub limiters: Arc<rate_limit::Limiters>,
    pub headers: Arc<headers::SecurityHeaders>,
    pub cors: Arc<cors::CorsPolicy>,
    pub buffers: Arc<buffers::Buffers>,
    /// Methods per documented path, for the `Allow` header of a 405.
    pub allowed: Arc<crate::api::AllowedMethods>,
    /// Counts requests refused by a rate limit.
    pub events: Arc<crate::metrics::AuthCounters>,
    /// Request counts and latencies, when metrics are served.
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

/// The layer around `next`. Not an `async fn`: the request is moved into
/// the one future below and nowhere else, so the future stays small (an
/// `async fn` keeps its arguments beside its body's state, and hyper moves
/// the whole future of every request).
pub fn front<'a, E: Endpoint>(
    next: &'a E,
    req: Request,
    config: &'a FrontConfig,
) -> impl Future<Output = poem::Result<Response>> + Send + 'a {
    let request_id = trace::RequestId::next();
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        route = tracing::field::Empty,
    );
    async move {
        let started = Instant::now();
        let path = req.uri().path();
        let api = path.starts_with("/api/");
        let docs = path == "/docs" || path.starts_with("/docs/");
        // An allowed origin's script reads every answer but a preflight
        // (which carries its own), refusals included: a 429's Retry-After
        // is of no use to a browser client that is not let read it.
        let mut cors_headers = config.cors.response_headers(&req);
        let client = config.limiters.client_ip(&req);
        let rate = match client {
            Some(ip) => config.limiters.check(config.limiters.key(ip), req.uri().path()),
            None => Ok(None),
        };
        let connection = RequestContext::connection();
        let header_bytes: usize = req
            .headers()
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 4)
            .sum();
        let rate = if header_bytes > config.max_header_bytes {
            Err(None)
        } else {
            rate.map_err(Some)
        };
        let mut resp = match rate {
            Err(None) => problem_response(
                &Error::Http {
                    status: poem::http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                    detail: format!(
                        "The request headers are larger than {} bytes.",
                        config.max_header_bytes
                    ),
                }
                .to_problem(),
            ),
            Err(Some(refusal)) => {
                config.events.rate_limited(refusal.by_auth_limit);
                let mut resp = too_many(refusal.retry_after_secs);
                refusal.state.write_to(resp.headers_mut());
                resp
            }
            Ok(rate) => {
                let conflict = RequestContext::framing_conflict();
                let mut resp = if let Some(refused) = ambiguous(&req, conflict) {
                    refused
                } else if let Some(preflight) = config.cors.preflight(&req) {
                    cors_headers = None;
                    preflight
                } else {
                    // The whole request (body upload and handling) has a
                    // deadline; a write already committed stays committed.
                    let handled = tokio::time::timeout(
                        config.request_timeout,
                        handle(next, req, config, connection.as_deref(), api),
                    );
                    match handled.await {
                        Ok(resp) => resp,
                        Err(_) => problem_response(
                            &Error::Http {
                                status: poem::http::StatusCode::REQUEST_TIMEOUT,
                                detail: "The request took too long.".to_owned(),
                            }
                            .to_problem(),
                        ),
                    }
                };
                if let Some(rate) = rate {
                    rate.write_to(resp.headers_mut());
                }
                resp
            }
        };
        if let Some(cors) = cors_headers {
            resp.headers_mut().extend(cors);
        }
        config.headers.apply(&mut resp, api, docs);
        trace::finish(&mut resp, request_id, started);
        if let Some(metrics) = &config.metrics {
            let operation = resp.data::<OperationId>().map(|op| op.0);
            metrics.http.record(operation, resp.status(), started.elapsed());
        }
        Ok(resp)
    }
    .instrument(span)
}

/// Reads the body (bounded) and calls the routes, with the bodies counted
/// against the memory budgets: a body as it arrives, an answer once it
/// exists (see [`buffers`]).
async fn handle<E: Endpoint>(
    next: &E,
    mut req: Request,
    config: &FrontConfig,
    connection: Option<&Connection>,
    api: bool,
) -> Response {
    let mut body_permit = None;
    // A refcount, not a copy: the path is needed again only for a 405.
    let uri = req.uri().clone();
    let count = |bytes: usize| match connection {
        Some(connection) => config.buffers.count_body(connection, &mut body_permit, bytes),
        None => true,
    };
    let mut resp = match limits::check_body(&mut req, config.max_body_bytes, count).await {
        Ok(()) => to_response(next.call(req).await.map(IntoResponse::into_response)),
        Err(refused) => refused,
    };
    drop(body_permit);
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allow) = config.allowed.for_path(uri.path())
    {
        resp.headers_mut().insert(header::ALLOW, allow.clone());
    }
    if let (Some(connection), true) = (connection, api) {
        let body: BoxBody<Bytes, std::io::Error> = resp.take_body().into();
        let size = http_body::Body::size_hint(&body).upper().unwrap_or(u64::MAX);
        resp.set_body(poem::Body::from(body));
        match config
            .buffers
            .hold_answer(connection, usize::try_from(size).unwrap_or(usize::MAX))
        {
            Ok(Some(permit)) => RequestContext::hold(permit),
            Ok(None) => {}
            // Dropping the answer frees what it held.
            Err(buffers::NoRoom) => return busy(),
        }
    }
    resp
}

/// The server holds as many bodies as it may: come back in a moment.
pub(crate) fn busy() -> Response {
    let err = Error::Unavailable { retry_after: 1 };
    let mut resp = problem_response(&err.to_problem());
    resp.headers_mut()
        .insert(header::RETRY_AFTER, poem::http::HeaderValue::from(1u32));
    resp
}

/// A request that different parts of a chain could read differently is
/// refused rather than guessed at (RFC 9110 and 9112): two `Authorization`
/// fields (proxies often keep the last, we would read the first), an
/// HTTP/1.1 request with no `Host` or with two, a body framed by both
/// `Transfer-Encoding` and `Content-Length` (the request smuggling shape),
/// or a transfer coding other than `chunked` (501). The body of such a
/// request is never read, so the connection is closed after the answer.
fn ambiguous(req: &Request, framing_conflict: bool) -> Option<Response> {
    let headers = req.headers();
    let transfer = headers.get(header::TRANSFER_ENCODING);
    let (status, detail) = if headers.get_all(header::AUTHORIZATION).iter().nth(1).is_some() {
        (
            StatusCode::BAD_REQUEST,
            "The request has more than one Authorization header.",
        )
    } else if req.version() == Version::HTTP_11 && host_count(headers) != 1 {
        (
            StatusCode::BAD_REQUEST,
            "An HTTP/1.1 request needs exactly one Host header.",
        )
    } else if framing_conflict || (transfer.is_some() && headers.contains_key(header::CONTENT_LENGTH)) {
        (
            StatusCode::BAD_REQUEST,
            "The request frames its body ambiguously (Content-Length with Transfer-Encoding, or an unreadable Content-Length).",
        )
    } else if transfer.is_some_and(|te| !te.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked")) {
        (
            StatusCode::NOT_IMPLEMENTED,
            "The request uses a transfer coding this server does not implement.",
        )
    } else {
        return None;
    };
    let mut resp = problem_response(
        &Error::Http {
            status,
            detail: detail.to_owned(),
        }
        .to_problem(),
    );
    resp.headers_mut()
        .insert(header::CONNECTION, poem::http::HeaderValue::from_static("close"));
    Some(resp)
}

fn host_count(headers: &HeaderMap) -> usize {
    headers.get_all(header::HOST).iter().take(2).count()
}

/// Our answers in place of the HTTP/1 parser's bare refusals (see
/// [`crate::listener`]), as raw HTTP/1.1 responses that close the
/// connection.
pub fn parser_answers(security: &headers::SecurityHeaders) -> std::collections::HashMap<u16, Bytes> {
    let refusals = [
        (StatusCode::BAD_REQUEST, "The request could not be parsed."),
        (StatusCode::PAYLOAD_TOO_LARGE, "The request body is too large."),
        (StatusCode::URI_TOO_LONG, "The request URL is too long."),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "The request headers are too large or too many.",
        ),
        (
            StatusCode::NOT_IMPLEMENTED,
            "The request uses a transfer coding this server does not implement.",
        ),
        (
            StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            "This HTTP version is not supported.",
        ),
    ];
    refusals
        .into_iter()
        .map(|(status, detail)| {
            let problem = Error::Http {
                status,
                detail: detail.to_owned(),
            }
            .to_problem();
            let mut resp = problem_response(&problem);
            security.apply(&mut resp, true, false);
            (
                status.as_u16(),
                raw_response(&resp, &crate::error::problem_body(&problem)),
            )
        })
        .collect()
}

/// A response's status and headers with `body`, as HTTP/1.1 bytes.
fn raw_response(resp: &Response, body: &[u8]) -> Bytes {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\n",
        resp.status().as_u16(),
        resp.status().canonical_reason().unwrap_or("Error")
    )
    .into_bytes();
    for (name, value) in resp.headers() {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\nconnection: close\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    Bytes::from(out)
}

fn too_many(retry_after: u64) -> Response {
    let err = Error::TooManyRequests {
        retry_after: u32::try_from(retry_after).unwrap_or(u32::MAX),
    };
    let mut resp = problem_response(&err.to_problem());
    resp.headers_mut().insert(
        poem::http::header::RETRY_AFTER,
        poem::http::HeaderValue::from(retry_after),
    );
    resp
}

/// Any error raised below (unknown route, wrong method, parse failures of
/// operations without their own error type) becomes problem+json. An
/// operation's own error response travels as a poem error built from that
/// response: it passes through untouched.
fn to_response(result: poem::Result<Response>) -> Response {
    match result {
        Ok(resp) => resp,
        Err(err) => {
            let operation = err.data::<OperationId>().copied();
            let mut resp = if err.is_from_response() {
                err.into_response()
            } else {
                problem_response(&Error::from_poem(&err).to_problem())
            };
            if let Some(op) = operation {
                resp.set_data(op);
            }
            resp
        }
    }
}
