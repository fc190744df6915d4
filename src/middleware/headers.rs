//! Response headers that every answer should carry.

use poem::Response;
use poem::http::{HeaderValue, StatusCode, header};

pub fn apply(resp: &mut Response, api: bool) {
    let status = resp.status();
    let headers = resp.headers_mut();
    if api {
        // API answers carry tokens or user data: never store them in a
        // browser or proxy cache.
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if status == StatusCode::UNAUTHORIZED {
        // RFC 6750 §3: tell the client which scheme we expect.
        headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
}
