//! CORS with an explicit allowlist of origins, none by default. An allowed
//! origin's preflight gets the methods and request headers the API uses; a
//! preflight from any other origin, or asking for anything else, is refused
//! (403, no `Access-Control-Allow-Origin`). Tokens travel in the
//! `Authorization` header, never in cookies, so credentials are not
//! allowed.

use poem::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use poem::{Request, Response};

use crate::error::{Error, problem_response};

const METHODS: &str = "GET, POST, PUT, PATCH, DELETE";
const REQUEST_HEADERS: [&str; 3] = ["authorization", "content-type", "if-match"];
const EXPOSED: &str = "ETag, Location, Retry-After, RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset";

#[derive(Debug, Clone, Default)]
pub struct CorsPolicy {
    origins: Vec<HeaderValue>,
}

impl CorsPolicy {
    pub fn new(origins: &[String]) -> Self {
        Self {
            origins: origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok())
                .collect(),
        }
    }

    fn allowed<'r>(&self, req: &'r Request) -> Option<&'r HeaderValue> {
        let origin = req.headers().get(header::ORIGIN)?;
        self.origins.contains(origin).then_some(origin)
    }

    /// Answers a preflight in place of the routes; `None` for other requests.
    pub fn preflight(&self, req: &Request) -> Option<Response> {
        let asks = req.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        if req.method() != Method::OPTIONS || !req.headers().contains_key(header::ORIGIN) {
            return None;
        }
        let method_ok = asks
            .to_str()
            .is_ok_and(|m| METHODS.split(", ").any(|allowed| allowed == m));
        let headers_ok = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .map_or(Ok(""), HeaderValue::to_str)
            .is_ok_and(|list| {
                list.split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .all(|h| REQUEST_HEADERS.contains(&h.as_str()))
            });
        let Some(origin) = self.allowed(req).filter(|_| method_ok && headers_ok) else {
            let err = Error::Http {
                status: StatusCode::FORBIDDEN,
                detail: "Cross-origin request refused.".to_owned(),
            };
            return Some(problem_response(&err.to_problem()));
        };
        let mut resp = Response::builder().status(StatusCode::NO_CONTENT).finish();
        let h = resp.headers_mut();
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static(METHODS),
        );
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            HeaderValue::from_static("Authorization, Content-Type, If-Match"),
        );
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("600"));
        h.insert(header::VARY, HeaderValue::from_static("Origin"));
        Some(resp)
    }

    /// The headers an actual cross-origin answer needs; nothing when CORS
    /// is off or the request names no origin.
    pub fn response_headers(&self, req: &Request) -> Option<HeaderMap> {
        if self.origins.is_empty() || !req.headers().contains_key(header::ORIGIN) {
            return None;
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::VARY, HeaderValue::from_static("Origin"));
        if let Some(origin) = self.allowed(req) {
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED),
            );
        }
        Some(headers)
    }
}
