//! Rate limits per client, with governor (GCRA): a general quota for
//! every `/api/` route and a stricter one for the routes that take
//! credentials (signup, login, refresh). A client is an IPv4 address or an
//! IPv6 prefix ([`ClientKey`]).
//!
//! The client's address is the socket's peer address. `X-Forwarded-For` is
//! read only when that peer is a configured trusted proxy, and then the
//! right-most address that is not itself a trusted proxy is the client:
//! everything to its left was written by the client and proves nothing.
//!
//! Answers over a limit are 429 problem+json with `Retry-After`; every
//! limited answer carries `RateLimit-Limit`, `RateLimit-Remaining` and
//! `RateLimit-Reset` (IETF draft names).
//!
//! Memory: one small state per address seen. [`Limiters::sweep`] (run every
//! minute) drops the addresses whose state has fully recovered, so the
//! maps hold only addresses active within the last refill period.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::{StateInformationMiddleware, StateSnapshot};
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use ipnet::IpNet;
use poem::Request;
use poem::http::{HeaderMap, HeaderName, HeaderValue};

use crate::client::{ClientKey, ClientKeys, ClientResolver};

type KeyedLimiter =
    RateLimiter<ClientKey, DashMapStateStore<ClientKey>, DefaultClock, StateInformationMiddleware>;

/// Rate-limit settings; a rate of 0 switches that limiter off.
#[derive(Debug, Clone)]
pub struct RateLimitConfig {
    /// Requests per minute per IP on `/api/` routes.
    pub per_minute: u32,
    /// Requests per minute per IP on signup, login and refresh.
    pub auth_per_minute: u32,
    /// Proxies whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// How addresses become clients (the IPv6 prefix).
    pub keys: ClientKeys,
}

struct Limiter {
    limiter: KeyedLimiter,
    per_minute: u32,
}

pub struct Limiters {
    general: Option<Limiter>,
    auth: Option<Limiter>,
    clients: ClientResolver,
}

/// Where a client stands against the limit that decided its request: the
/// `RateLimit-*` headers of the answer. Kept as numbers and written into
/// the answer once, not built as a header map per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub per_minute: u32,
    pub remaining: u32,
    /// Seconds until the whole quota is available again.
    pub reset_secs: u64,
}

static LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

impl RateState {
    pub fn write_to(self, headers: &mut HeaderMap) {
        headers.insert(LIMIT.clone(), HeaderValue::from(self.per_minute));
        headers.insert(REMAINING.clone(), HeaderValue::from(self.remaining));
        headers.insert(RESET.clone(), HeaderValue::from(self.reset_secs));
    }
}

/// A request refused by a limit.
pub struct Refusal {
    pub retry_after_secs: u64,
    pub state: RateState,
    /// Refused by the stricter limit of the credential routes, rather
    /// than the general one.
    pub by_auth_limit: bool,
}

fn limiter(per_minute: u32) -> Option<Limiter> {
    NonZeroU32::new(per_minute).map(|n| Limiter {
        limiter: RateLimiter::dashmap(Quota::per_minute(n)).with_middleware::<StateInformationMiddleware>(),
        per_minute,
    })
}

fn is_credential_route(path: &str) -> bool {
    matches!(
        path,
        "/api/v1/auth/signup"
            | "/api/v1/auth/login"
            | "/api/v1/auth/login/mfa"
            | "/api/v1/auth/refresh"
            | "/api/v1/me/password"
            | "/api/v1/me/mfa/totp"
            | "/api/v1/me/mfa/totp/confirm"
            | "/api/v1/me/mfa/totp/disable"
            | "/api/v1/me/mfa/recovery-codes"
    )
}

impl Limiters {
    pub fn new(config: &RateLimitConfig) -> Self {
        Self {
            general: limiter(config.per_minute),
            auth: limiter(config.auth_per_minute),
            clients: ClientResolver::new(config.trusted_proxies.clone(), config.keys),
        }
    }

    /// The client's address as far as we can trust it.
    pub fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        self.clients.client_ip(req)
    }

    /// The client an address belongs to.
    pub fn key(&self, ip: IpAddr) -> ClientKey {
        self.clients.keys().key(ip)
    }

    #[cfg(test)]
    fn client_behind(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        self.clients.client_behind(peer, headers)
    }

    /// Counts one request from `client` to `path`. `Ok` carries where the
    /// client stands (`None` off the limited routes); `Err` is the refusal.
    pub fn check(&self, client: ClientKey, path: &str) -> Result<Option<RateState>, Refusal> {
        if !path.starts_with("/api/") {
            return Ok(None);
        }
        // The stricter limiter decides the headers when both apply.
        let strict = if is_credential_route(path) {
            self.auth.as_ref()
        } else {
            None
        };
        let mut state = None;
        for limiter in [self.general.as_ref(), strict].into_iter().flatten() {
            match limiter.limiter.check_key(&client) {
                Ok(snapshot) => state = Some(rate_state(limiter.per_minute, &snapshot)),
                Err(not_until) => {
                    let wait = not_until.wait_time_from(DefaultClock::default().now());
                    let retry_after_secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                    return Err(Refusal {
                        retry_after_secs,
                        state: RateState {
                            per_minute: limiter.per_minute,
                            remaining: 0,
                            reset_secs: retry_after_secs,
                        },
                        by_auth_limit: strict.is_some_and(|s| std::ptr::eq(s, limiter)),
                    });
                }
            }
        }
        Ok(state)
    }

    /// Forgets addresses whose quota has fully recovered.
    pub fn sweep(&self) {
        for limiter in [self.general.as_ref(), self.auth.as_ref()].into_iter().flatten() {
            limiter.limiter.retain_recent();
            limiter.limiter.shrink_to_fit();
        }
    }

    /// Addresses currently tracked (for tests and the closing numbers).
    pub fn tracked(&self) -> usize {
        [self.general.as_ref(), self.auth.as_ref()]
            .into_iter()
            .flatten()
            .map(|l| l.limiter.len())
            .sum()
    }
}

fn rate_state(per_minute: u32, snapshot: &StateSnapshot) -> RateState {
    let remaining = snapshot.remaining_burst_capacity();
    // Seconds until the whole burst is available again.
    let per_cell = snapshot.quota().replenish_interval();
    let reset_secs = per_cell
        .saturating_mul(per_minute.saturating_sub(remaining))
        .as_secs();
    RateState {
        per_minute,
        remaining,
        reset_secs,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiters(trusted: &[&str]) -> Limiters {
        Limiters::new(&RateLimitConfig {
            per_minute: 100,
            auth_per_minute: 3,
            trusted_proxies: trusted.iter().map(|t| t.parse().unwrap()).collect(),
            keys: ClientKeys::default(),
        })
    }

    fn client(l: &Limiters, peer: &str, xff: Option<&str>) -> IpAddr {
        let mut headers = HeaderMap::new();
        if let Some(xff) = xff {
            headers.insert("x-forwarded-for", HeaderValue::from_str(xff).unwrap());
        }
        l.client_behind(peer.parse().unwrap(), &headers)
    }

    #[test]
    fn every_route_that_checks_a_password_or_a_code_takes_the_auth_limit() {
        for path in [
            "/api/v1/auth/signup",
            "/api/v1/auth/login",
            "/api/v1/auth/login/mfa",
            "/api/v1/auth/refresh",
            "/api/v1/me/password",
            "/api/v1/me/mfa/totp",
            "/api/v1/me/mfa/totp/confirm",
            "/api/v1/me/mfa/totp/disable",
            "/api/v1/me/mfa/recovery-codes",
        ] {
            assert!(is_credential_route(path), "{path}");
        }
        assert!(!is_credential_route("/api/v1/notes"));
    }

    #[test]
    fn forwarded_for_is_ignored_from_an_untrusted_peer() {
        let l = limiters(&["10.0.0.0/8"]);
        let ip = client(&l, "203.0.113.9", Some("198.51.100.1"));
        assert_eq!(ip, "203.0.113.9".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_right_most_untrusted_hop_is_the_client() {
        let l = limiters(&["10.0.0.0/8"]);
        let ip = client(&l, "10.0.0.2", Some("1.2.3.4, 198.51.100.7, 10.0.0.9"));
        assert_eq!(
            ip,
            "198.51.100.7".parse::<IpAddr>().unwrap(),
            "1.2.3.4 was written by the client"
        );
        let garbage = client(&l, "10.0.0.2", Some("1.2.3.4, not-an-ip"));
        assert_eq!(garbage, "10.0.0.2".parse::<IpAddr>().unwrap());
        // Regression: a hop with a port or brackets was taken for garbage,
        // so every client behind the proxy shared the proxy's quota.
        let with_port = client(&l, "10.0.0.2", Some("198.51.100.7:5555"));
        assert_eq!(with_port, "198.51.100.7".parse::<IpAddr>().unwrap());
        let v6 = client(&l, "10.0.0.2", Some("[2001:db8::7]:4711, 10.0.0.3"));
        assert_eq!(v6, "2001:db8::7".parse::<IpAddr>().unwrap());
        let mapped = client(&l, "::ffff:10.0.0.2", Some("::ffff:198.51.100.9"));
        assert_eq!(
            mapped,
            "198.51.100.9".parse::<IpAddr>().unwrap(),
            "trusted when mapped too"
        );
    }

    #[test]
    fn credential_routes_get_the_stricter_limit() {
        let l = limiters(&[]);
        let ip = l.key("192.0.2.1".parse().unwrap());
        for _ in 0..3 {
            assert!(l.check(ip, "/api/v1/auth/login").is_ok());
        }
        let Err(refusal) = l.check(ip, "/api/v1/auth/login") else {
            panic!("fourth login refused");
        };
        assert!(refusal.retry_after_secs >= 1);
        assert_eq!(
            (refusal.state.per_minute, refusal.state.remaining),
            (3, 0),
            "the refusal's headers say the stricter quota, used up"
        );
        assert!(
            l.check(ip, "/api/v1/notes").is_ok(),
            "the general quota is separate"
        );
        assert!(
            l.check(ip, "/api/v1/me/password").is_err(),
            "a password change checks a password: the same budget"
        );
        let other = l.key("192.0.2.2".parse().unwrap());
        assert!(l.check(other, "/api/v1/auth/login").is_ok(), "per address");
        assert!(l.check(ip, "/healthz").is_ok(), "probes are not limited");
    }
}
