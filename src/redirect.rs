//! `--http-redirect-listen`: a plain-HTTP listener that answers every
//! request with a 308 to the same path on https, and nothing else. No
//! request reaches the API in clear text (a 308 keeps the method, so a
//! misconfigured client that POSTs to http:// fails visibly instead of
//! being turned into a GET).

use std::sync::Arc;

use poem::http::{StatusCode, header};
use poem::{Endpoint, Request, Response};

use crate::tls::files::CertFiles;

/// The names this server has certificates for: a request for any other
/// host gets a 400, never a redirect somewhere else (an open redirect).
pub enum RedirectHosts {
    /// `--tls acme`: the `--acme-domain` names.
    Listed(Vec<String>),
    /// `--tls files`: whatever the certificate served now covers.
    Certificate(Arc<CertFiles>),
    /// Any plain host (unit tests of the location only).
    #[cfg(test)]
    Any,
}

impl RedirectHosts {
    fn allow(&self, host: &str) -> bool {
        match self {
            RedirectHosts::Listed(names) => names.iter().any(|n| n == host),
            RedirectHosts::Certificate(files) => files.covers(host),
            #[cfg(test)]
            RedirectHosts::Any => true,
        }
    }
}

/// Sends every request to `https://<host>[:port]<path?query>`.
pub struct RedirectToHttps {
    /// Suffix naming the HTTPS port, empty for 443.
    port_suffix: String,
    hosts: RedirectHosts,
}

impl RedirectToHttps {
    pub fn new(https_port: u16, hosts: RedirectHosts) -> Self {
        Self {
            port_suffix: if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            },
            hosts,
        }
    }

    fn location(&self, req: &Request) -> Option<String> {
        let authority = match req.uri().authority() {
            Some(a) => a.as_str().to_owned(),
            None => req.headers().get(header::HOST)?.to_str().ok()?.to_owned(),
        };
        let host = host_of(&authority)?;
        if !self.hosts.allow(&host) {
            return None;
        }
        // `OPTIONS *` names no resource: send it to the root.
        let path = match req
            .uri()
            .path_and_query()
            .map(poem::http::uri::PathAndQuery::as_str)
        {
            Some(pq) if pq.starts_with('/') => pq,
            _ => "/",
        };
        Some(format!("https://{host}{}{path}", self.port_suffix))
    }
}

impl Endpoint for RedirectToHttps {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        Ok(match self.location(&req) {
            Some(location) => Response::builder()
                .status(StatusCode::PERMANENT_REDIRECT)
                .header(header::LOCATION, location)
                .body(()),
            None => crate::error::problem_response(
                &crate::error::Error::BadRequest("A Host header naming this server is required.".to_owned())
                    .to_problem(),
            ),
        })
    }
}

/// The host part of an authority (`name`, `name:port`, `[v6]:port`),
/// lower-cased, if it is a plain DNS name or IP literal. Anything else
/// (user info, odd characters) gets no redirect.
fn host_of(authority: &str) -> Option<String> {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.starts_with(':')) || inside.parse::<std::net::Ipv6Addr>().is_err() {
            return None;
        }
        return Some(format!("[{inside}]"));
    } else {
        authority.split_once(':').map_or(authority, |(h, _)| h)
    };
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_taken_only_when_plain() {
        assert_eq!(host_of("Notes.Example.org").as_deref(), Some("notes.example.org"));
        assert_eq!(
            host_of("notes.example.org:80").as_deref(),
            Some("notes.example.org")
        );
        assert_eq!(host_of("127.0.0.1:8080").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_of("[::1]:80").as_deref(), Some("[::1]"));
        assert_eq!(host_of("user@evil.example"), None);
        assert_eq!(host_of("evil.example/path"), None);
        assert_eq!(host_of("[not-v6]"), None);
        assert_eq!(host_of(""), None);
    }

    fn location(redirect: &RedirectToHttps, uri: &str, host: &str) -> Option<String> {
        let req = Request::builder()
            .uri_str(uri)
            .header(header::HOST, host)
            .finish();
        redirect.location(&req)
    }

    #[test]
    fn locations_keep_path_and_query_and_name_the_port() {
        let open = RedirectToHttps::new(8443, RedirectHosts::Any);
        assert_eq!(
            location(&open, "/a/b?c=d", "notes.example.org").as_deref(),
            Some("https://notes.example.org:8443/a/b?c=d")
        );
        assert_eq!(
            location(&open, "*", "notes.example.org").as_deref(),
            Some("https://notes.example.org:8443/")
        );
        let standard = RedirectToHttps::new(443, RedirectHosts::Any);
        assert_eq!(
            location(&standard, "/", "x.org:80").as_deref(),
            Some("https://x.org/")
        );
    }

    #[test]
    fn with_acme_only_its_domains_are_redirected_to() {
        let acme = RedirectToHttps::new(443, RedirectHosts::Listed(vec!["notes.example.org".to_owned()]));
        assert_eq!(
            location(&acme, "/", "Notes.Example.org").as_deref(),
            Some("https://notes.example.org/")
        );
        assert_eq!(location(&acme, "/", "evil.example"), None);
        // An absolute request target names the host itself.
        assert_eq!(
            location(&acme, "http://evil.example/x", "notes.example.org"),
            None
        );
        assert_eq!(
            location(&acme, "http://notes.example.org/x", "ignored").as_deref(),
            Some("https://notes.example.org/x")
        );
    }
}
