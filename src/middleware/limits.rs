//! The request body limit. A body larger than the limit is refused with 413
//! before it is read whole: at once when `Content-Length` says so, otherwise
//! as soon as the streamed body passes the limit. A JSON body is read whole
//! by the API anyway, so reading it here (bounded) costs nothing extra.

use futures_util::StreamExt;
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

/// Bytes of a body allocated before any has arrived.
const BODY_UPFRONT: usize = 16 * 1024;

/// Whether a route may read this request's body: a POST, PUT or PATCH to
/// the API.
/// poem-openapi reads any `…+json` media type, in any declared charset, as
/// UTF-8 JSON; the document promises `application/json; charset=utf-8`. A
/// body labelled otherwise as JSON (`application/problem+json`,
/// `charset=utf-16`) is refused rather than misread. Types that are not
/// JSON at all are left to poem-openapi, which refuses them where a body is
/// read (and ignores them where none is, as on logout).
fn json_as_documented(content_type: &[u8]) -> bool {
    let Ok(value) = std::str::from_utf8(content_type) else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let json_like = essence.ends_with("+json") || essence == "application/json";
    if !json_like {
        return true;
    }
    let charset_ok = parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            value.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        _ => true,
    });
    essence == "application/json" && charset_ok
}

pub fn takes_body(req: &Request) -> bool {
    matches!(*req.method(), Method::POST | Method::PUT | Method::PATCH)
        && req.uri().path().starts_with("/api/")
}

/// `Ok`: the request may go on; `Err`: the answer in its place. A body a
/// route will read is read here, whole and bounded, each piece counted by `count`
/// as it arrives (`false`: no room, 503): what a client holds is what it
/// has sent, never what it has only announced.
pub async fn check_body(
    req: &mut Request,
    limit: usize,
    mut count: impl FnMut(usize) -> bool,
) -> Result<(), Response> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large(limit));
    }
    // No other route reads a body (not the documentation, not other
    // methods), so theirs are left unread: reading them would spend memory
    // no budget counts.
    if !takes_body(req) {
        return Ok(());
    }
    if req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| !json_as_documented(v.as_bytes()))
    {
        return Err(problem_response(&Error::UnsupportedMediaType.to_problem()));
    }
    let unreadable = || {
        let err = Error::BadRequest("The request body could not be read.".to_owned());
        problem_response(&err.to_problem())
    };
    // Room for a typical body up front, never for what is only announced.
    let announced = declared.map_or(0, |n| usize::try_from(n).unwrap_or(0));
    let mut body = Vec::with_capacity(announced.min(limit).min(BODY_UPFRONT));
    let mut pieces = req.take_body().into_bytes_stream();
    while let Some(piece) = pieces.next().await {
        let piece = piece.map_err(|_| unreadable())?;
        if body.len() + piece.len() > limit {
            return Err(too_large(limit));
        }
        if !count(piece.len()) {
            return Err(super::busy());
        }
        body.extend_from_slice(&piece);
    }
    req.set_body(body);
    Ok(())
}
