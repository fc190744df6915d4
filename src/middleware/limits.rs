//! The request body limit. A body larger than the limit is refused with 413
//! before it is read whole: at once when `Content-Length` says so, otherwise
//! as soon as the streamed body passes the limit. A JSON body is read whole
//! by the API anyway, so reading it here (bounded) costs nothing extra.

use poem::http::{Method, StatusCode, header};
use poem::{Request, Response};

use crate::error::{Error, problem_response};

fn too_large(limit: usize) -> Response {
    problem_response(
        &Error::Http {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            detail: format!("The request body is larger than {limit} bytes."),
        }
        .to_problem(),
    )
}

/// Whether a route may read this request's body: a POST, PUT or PATCH to
/// the API.
pub fn takes_body(req: &Request) -> bool {
    matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && req.uri().path().starts_with("/api/")
}

/// Passes the request on, or answers in its place.
pub async fn check_body(mut req: Request, limit: usize) -> Result<Request, Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    // No declared length on a request that carries a body: a chunked (or
    // HTTP/2) body. Read it with the limit in force. No other route reads a
    // body (not the documentation, not other methods), so theirs are left
    // unread: reading them would spend memory no budget counts.
    if declared.is_none() && takes_body(&req) {
        match req.take_body().into_bytes_limit(limit).await {
            Ok(bytes) => req.set_body(bytes),
            Err(poem::error::ReadBodyError::PayloadTooLarge) => return Err(too_large(limit)),
            Err(_) => {
                let err = Error::BadRequest("The request body could not be read.".to_owned());
                return Err(problem_response(&err.to_problem()));
            }
        }
    }
    Ok(req)
}
