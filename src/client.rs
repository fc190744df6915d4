//! Who a client is, for every per-client limit (request rates, open
//! connections, the login backoff's known clients).
//!
//! An IPv4 address is one client. An IPv6 address is not: a single host is
//! routinely given a whole /64 (2^64 addresses), so keying on the exact
//! address would let it rotate past every limit. IPv6 clients are keyed by
//! their prefix (/64 by default, like nginx's and Cloudflare's advice), and
//! an IPv4-mapped IPv6 address (`::ffff:192.0.2.1`, what a dual-stack socket
//! reports for IPv4 peers) is the IPv4 client it stands for.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// One client for the purpose of limits: an IPv4 address or an IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientKey {
    V4(u32),
    /// The address with every bit past the prefix cleared.
    V6(u128),
}

impl ClientKey {
    /// A fixed-size form for storage: a tag byte, then the address bytes.
    pub fn to_bytes(self) -> [u8; 32] {
        let mut out = [0u8; 32];
        match self {
            ClientKey::V4(a) => {
                out[0] = 4;
                out[1..5].copy_from_slice(&a.to_be_bytes());
            }
            ClientKey::V6(a) => {
                out[0] = 6;
                out[1..17].copy_from_slice(&a.to_be_bytes());
            }
        }
        out
    }
}

impl ClientKey {
    /// The network the client is in, coarsely: its IPv4 /24 or IPv6 /48,
    /// as `192.0.2.0/24`. Enough for a person to recognise where a login
    /// came from, without keeping the address.
    pub fn coarse(self) -> String {
        match self {
            ClientKey::V4(a) => format!("{}/24", Ipv4Addr::from(a & 0xFFFF_FF00)),
            ClientKey::V6(a) => format!("{}/48", Ipv6Addr::from(a & (u128::MAX << 80))),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::V4(a) => write!(f, "{}", Ipv4Addr::from(*a)),
            ClientKey::V6(a) => write!(f, "{}", Ipv6Addr::from(*a)),
        }
    }
}

/// Turns addresses into [`ClientKey`]s with the configured IPv6 prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientKeys {
    v6_prefix: u8,
}

impl Default for ClientKeys {
    fn default() -> Self {
        Self { v6_prefix: 64 }
    }
}

impl ClientKeys {
    /// `v6_prefix` is clamped to 1..=128.
    pub fn new(v6_prefix: u8) -> Self {
        Self {
            v6_prefix: v6_prefix.clamp(1, 128),
        }
    }

    pub fn key(&self, ip: IpAddr) -> ClientKey {
        match canonical(ip) {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => {
                let mask = u128::MAX << (128 - u32::from(self.v6_prefix));
                ClientKey::V6(u128::from(v6) & mask)
            }
        }
    }
}

/// Finds the client of a request: the socket's peer, or behind a trusted
/// proxy the right-most `X-Forwarded-For` hop that is not itself a trusted
/// proxy (everything to its left was written by the client and proves
/// nothing).
#[derive(Debug, Clone, Default)]
pub struct ClientResolver {
    trusted: Vec<ipnet::IpNet>,
    keys: ClientKeys,
}

impl ClientResolver {
    pub fn new(trusted: Vec<ipnet::IpNet>, keys: ClientKeys) -> Self {
        Self { trusted, keys }
    }

    /// The client's address as far as we can trust it.
    pub fn client_ip(&self, req: &poem::Request) -> Option<IpAddr> {
        let peer = req.remote_addr().as_socket_addr()?.ip();
        Some(self.client_behind(peer, req.headers()))
    }

    /// The client key of a request.
    pub fn client_key(&self, req: &poem::Request) -> Option<ClientKey> {
        self.client_ip(req).map(|ip| self.keys.key(ip))
    }

    pub fn keys(&self) -> ClientKeys {
        self.keys
    }

    pub fn client_behind(&self, peer: IpAddr, headers: &poem::http::HeaderMap) -> IpAddr {
        if !self.is_trusted(peer) {
            return canonical(peer);
        }
        let forwarded = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect::<Vec<_>>();
        // Walk from the right: the nearest hop that is not ours is the client.
        for hop in forwarded.iter().rev() {
            match parse_forwarded_hop(hop) {
                Some(ip) if self.is_trusted(ip) => {}
                Some(ip) => return canonical(ip),
                // Garbage where an address should be: stop believing the
                // header and key by the last address we can vouch for.
                None => return canonical(peer),
            }
        }
        canonical(peer)
    }

    /// Whether `ip` is a trusted proxy.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.trusted.iter().any(|net| net.contains(&ip))
    }
}

/// An IPv4-mapped IPv6 address as the IPv4 address it carries.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 @ IpAddr::V4(_) => v4,
    }
}

/// Reads one hop of `X-Forwarded-For` as proxies actually write it: a bare
/// address, an IPv4 address with a port (`192.0.2.7:5555`), an IPv6
/// address in brackets with or without a port (`[2001:db8::7]:4711`), any
/// of them in double quotes. `unknown` and obfuscated names are `None`.
pub fn parse_forwarded_hop(hop: &str) -> Option<IpAddr> {
    let hop = hop.trim();
    let hop = hop
        .strip_prefix('"')
        .and_then(|h| h.strip_suffix('"'))
        .unwrap_or(hop)
        .trim();
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Some(rest) = hop.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        let port_ok = after.is_empty() || after.strip_prefix(':').is_some_and(is_port);
        return if port_ok {
            inside.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
        } else {
            None
        };
    }
    hop.parse::<SocketAddr>().ok().map(|s| s.ip())
}

fn is_port(s: &str) -> bool {
    !s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_coarse_address_keeps_only_the_network() {
        let keys = ClientKeys::new(128);
        assert_eq!(keys.key(ip("192.0.2.77")).coarse(), "192.0.2.0/24");
        assert_eq!(keys.key(ip("::ffff:192.0.2.77")).coarse(), "192.0.2.0/24");
        assert_eq!(keys.key(ip("2001:db8:aa:bb:cc::1")).coarse(), "2001:db8:aa::/48");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_prefix() {
        let keys = ClientKeys::default();
        assert_eq!(
            keys.key(ip("2001:db8:1:1::1")),
            keys.key(ip("2001:db8:1:1:ffff:ffff:ffff:ffff")),
            "one /64 is one client"
        );
        assert_ne!(
            keys.key(ip("2001:db8:1:1::1")),
            keys.key(ip("2001:db8:1:2::1")),
            "another /64 is another client"
        );
        let exact = ClientKeys::new(128);
        assert_ne!(exact.key(ip("2001:db8::1")), exact.key(ip("2001:db8::2")));
        assert_eq!(
            ClientKeys::new(0),
            ClientKeys::new(1),
            "clamped, never a zero-bit mask"
        );
    }

    #[test]
    fn an_ipv4_mapped_address_is_the_ipv4_client() {
        let keys = ClientKeys::default();
        assert_eq!(keys.key(ip("::ffff:192.0.2.1")), keys.key(ip("192.0.2.1")));
        assert_ne!(keys.key(ip("192.0.2.1")), keys.key(ip("192.0.2.2")));
        assert_eq!(keys.key(ip("::ffff:192.0.2.1")).to_string(), "192.0.2.1");
    }

    #[test]
    fn forwarded_hops_parse_in_every_form_proxies_write() {
        let cases = [
            ("192.0.2.7", Some("192.0.2.7")),
            (" 192.0.2.7:5555 ", Some("192.0.2.7")),
            ("2001:db8::7", Some("2001:db8::7")),
            ("[2001:db8::7]", Some("2001:db8::7")),
            ("[2001:db8::7]:4711", Some("2001:db8::7")),
            ("\"[2001:db8::7]:4711\"", Some("2001:db8::7")),
            ("unknown", None),
            ("_hidden", None),
            ("[2001:db8::7]x", None),
            ("[192.0.2.7]:80", None),
            ("192.0.2.7:", None),
        ];
        for (hop, expected) in cases {
            assert_eq!(parse_forwarded_hop(hop), expected.map(ip), "{hop:?}");
        }
    }
}
