//! What happens to every request around the routes, in one layer: a
//! request id and span, the body limit, turning any error into
//! problem+json, response headers, and one log line.
//!
//! It is one `around` function rather than a stack of middlewares on
//! purpose: each poem layer wraps (and moves) the whole request future, and
//! on a note read those copies were a measurable part of the cost.

pub mod cors;
pub mod headers;
pub mod limits;
pub mod rate_limit;
pub mod trace;

use std::sync::Arc;
use std::time::Instant;

use poem::{Endpoint, IntoResponse, Request, Response};
use poem_openapi::OperationId;
use tracing::Instrument;

use crate::error::{Error, problem_response};

/// Per-request limits the front layer enforces.
#[derive(Clone)]
pub struct FrontConfig {
    pub max_body_bytes: usize,
    pub request_timeout: std::time::Duration,
    pub max_header_bytes: usize,
    pub limiters: Arc<rate_limit::Limiters>,
    pub headers: Arc<headers::SecurityHeaders>,
    pub cors: Arc<cors::CorsPolicy>,
}

pub async fn front<E: Endpoint>(next: Arc<E>, req: Request, config: FrontConfig) -> poem::Result<Response> {
    let request_id = trace::next_request_id();
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
        let cors_headers = config.cors.response_headers(&req);
        let client = config.limiters.client_ip(&req);
        let rate = match client {
            Some(ip) => config.limiters.check(ip, req.uri().path()),
            None => Ok(poem::http::HeaderMap::new()),
        };
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
                let mut resp = too_many(refusal.retry_after_secs);
                resp.headers_mut().extend(refusal.headers);
                resp
            }
            Ok(rate_headers) => {
                let mut resp = if let Some(preflight) = config.cors.preflight(&req) {
                    preflight
                } else {
                    let handled = async {
                        match limits::check_body(req, config.max_body_bytes).await {
                            Ok(req) => to_response(next.call(req).await.map(IntoResponse::into_response)),
                            Err(refused) => refused,
                        }
                    };
                    // The whole request (body upload and handling) has a
                    // deadline; a write already committed stays committed.
                    let mut resp = match tokio::time::timeout(config.request_timeout, handled).await {
                        Ok(resp) => resp,
                        Err(_) => problem_response(
                            &Error::Http {
                                status: poem::http::StatusCode::REQUEST_TIMEOUT,
                                detail: "The request took too long.".to_owned(),
                            }
                            .to_problem(),
                        ),
                    };
                    if let Some(cors) = cors_headers {
                        resp.headers_mut().extend(cors);
                    }
                    resp
                };
                resp.headers_mut().extend(rate_headers);
                resp
            }
        };
        config.headers.apply(&mut resp, api, docs);
        trace::finish(&mut resp, &request_id, started);
        Ok(resp)
    }
    .instrument(span)
    .await
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
