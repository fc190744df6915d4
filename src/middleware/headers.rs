//! Response headers that every answer should carry.

use poem::http::{HeaderValue, StatusCode, header};
use poem::{Endpoint, IntoResponse, Request, Response};

pub async fn set_headers<E: Endpoint>(next: E, req: Request) -> poem::Result<Response> {
    let api = req.uri().path().starts_with("/api/");
    let mut resp = next.get_response(req).await;
    let headers = resp.headers_mut();
    if api {
        // API answers carry tokens or user data: never store them in a
        // browser or proxy cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if resp.status() == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3: tell the client which scheme we expect.
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    Ok(resp.into_response())
}
