//! Response headers every answer carries: what Helmet sets, tuned for an
//! API. API answers forbid everything (`default-src 'none'`); the Swagger UI
//! page gets the narrowest policy it works under: its inline scripts allowed
//! by hash only (computed from the page when it is built), inline styles (Swagger
//! UI sets style attributes from script), images from itself and `data:`,
//! and requests to this origin only.

use poem::Response;
use poem::http::{HeaderName, HeaderValue, StatusCode, header};
use sha2::{Digest, Sha256};

static COOP: HeaderName = HeaderName::from_static("cross-origin-opener-policy");
static CORP: HeaderName = HeaderName::from_static("cross-origin-resource-policy");
static PERMISSIONS_POLICY: HeaderName = HeaderName::from_static("permissions-policy");

const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'";
const PERMISSIONS: &str = "accelerometer=(), camera=(), geolocation=(), gyroscope=(), magnetometer=(), \
                           microphone=(), payment=(), usb=()";

/// The policy of the documentation's answers, for `docs_html`, the Swagger
/// UI page as served: its inline scripts allowed by their hashes.
pub fn docs_csp(docs_html: &str) -> HeaderValue {
    let hashes = inline_script_hashes(docs_html);
    let csp = format!(
        "default-src 'none'; script-src {}; style-src 'unsafe-inline'; img-src 'self' data:; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        if hashes.is_empty() {
            "'none'".to_owned()
        } else {
            hashes.join(" ")
        }
    );
    HeaderValue::from_str(&csp).unwrap_or(HeaderValue::from_static(API_CSP))
}

/// The header values, computed once.
#[derive(Clone)]
pub struct SecurityHeaders {
    hsts: Option<HeaderValue>,
}

impl SecurityHeaders {
    /// `hsts` (max-age, includeSubDomains) is set when the server speaks TLS.
    pub fn new(hsts: Option<(u64, bool)>) -> Self {
        Self {
            hsts: hsts.and_then(|(age, subdomains)| {
                let suffix = if subdomains { "; includeSubDomains" } else { "" };
                HeaderValue::from_str(&format!("max-age={age}{suffix}")).ok()
            }),
        }
    }

    /// `api`: an `/api/` path; `docs`: a `/docs` path, whose answers keep
    /// the policy the documentation gave them (any other gets the API's).
    pub fn apply(&self, resp: &mut Response, api: bool, docs: bool) {
        let status = resp.status();
        let h = resp.headers_mut();
        h.reserve(10);
        h.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
        h.insert(COOP.clone(), HeaderValue::from_static("same-origin"));
        h.insert(CORP.clone(), HeaderValue::from_static("same-origin"));
        h.insert(PERMISSIONS_POLICY.clone(), HeaderValue::from_static(PERMISSIONS));
        if !(docs && h.contains_key(header::CONTENT_SECURITY_POLICY)) {
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(API_CSP));
        }
        if let Some(hsts) = &self.hsts {
            h.insert(header::STRICT_TRANSPORT_SECURITY, hsts.clone());
        }
        h.remove(header::SERVER);
        if api {
            // API answers carry tokens or user data: never store them in a
            // browser or proxy cache.
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        }
        if status == StatusCode::UNAUTHORIZED {
            // RFC 6750 §3: tell the client which scheme we expect.
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
    }
}

/// `'sha256-…'` sources for each inline `<script>` of a page. The content of
/// an inline script cannot contain `</script>`, so each block ends at the
/// first one after its opening tag, and scanning resumes after it (strings
/// inside a script that look like tags are skipped with it).
fn inline_script_hashes(html: &str) -> Vec<String> {
    use base64ct::{Base64, Encoding};
    let mut hashes = Vec::new();
    let mut rest = html;
    while let Some(open) = rest.find("<script") {
        let Some(tag_end) = rest[open..].find('>').map(|i| open + i + 1) else {
            break;
        };
        let Some(close) = rest[tag_end..].find("</script>").map(|i| tag_end + i) else {
            break;
        };
        let body = &rest[tag_end..close];
        if !rest[open..tag_end].contains("src=") {
            hashes.push(format!(
                "'sha256-{}'",
                Base64::encode_string(&Sha256::digest(body.as_bytes()))
            ));
        }
        rest = &rest[close + "</script>".len()..];
    }
    hashes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_inline_script_is_hashed_once() {
        let html = r#"<html><script>var a = "<script>";</script><p>x</p><script src="/x.js"></script><script type="module">b()</script>"#;
        let hashes = inline_script_hashes(html);
        assert_eq!(hashes.len(), 2, "the external script is not hashed: {hashes:?}");
        let expected = Base64::encode_string(&Sha256::digest(br#"var a = "<script>";"#));
        assert_eq!(hashes[0], format!("'sha256-{expected}'"));
    }

    use base64ct::{Base64, Encoding};
}
