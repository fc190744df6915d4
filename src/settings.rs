//! Server settings: one struct, defaults in code, every field a flag that
//! can also come from a `NOTESD_*` environment variable (flags win).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::password::{HashCost, HashPoolSize};

#[derive(Debug, Clone, Args)]
pub struct Settings {
    /// Address and port to listen on.
    #[arg(long, env = "NOTESD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,

    /// Directory for the database and the token signing keys (made 0700).
    #[arg(long, env = "NOTESD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Life of an access token, e.g. `15m`.
    #[arg(long, env = "NOTESD_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// A session not refreshed for this long ends, e.g. `30d`.
    #[arg(long, env = "NOTESD_SESSION_IDLE_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub session_idle_ttl: Duration,

    /// A session ends this long after login whatever its use, e.g. `90d`.
    #[arg(long, env = "NOTESD_SESSION_ABSOLUTE_TTL", default_value = "90d", value_parser = humantime::parse_duration)]
    pub session_absolute_ttl: Duration,

    /// Argon2id memory cost in KiB (OWASP: 19456).
    #[arg(long, env = "NOTESD_ARGON2_MEMORY_KIB", default_value_t = 19_456)]
    pub argon2_memory_kib: u32,

    /// Argon2id iterations (OWASP: 2).
    #[arg(long, env = "NOTESD_ARGON2_ITERATIONS", default_value_t = 2)]
    pub argon2_iterations: u32,

    /// Argon2id lanes (OWASP: 1).
    #[arg(long, env = "NOTESD_ARGON2_PARALLELISM", default_value_t = 1)]
    pub argon2_parallelism: u32,

    /// Password hashes computed at once; default: one fewer than the cores
    /// (at least 1), so hashing never takes every core.
    #[arg(long, env = "NOTESD_HASH_CONCURRENCY")]
    pub hash_concurrency: Option<usize>,

    /// Password hashes allowed to wait for a thread; beyond this, signup and
    /// login answer 503 with Retry-After at once.
    #[arg(long, env = "NOTESD_HASH_QUEUE", default_value_t = 32)]
    pub hash_queue: usize,

    /// Lowest zxcvbn score (0-4) a new password must reach.
    #[arg(long, env = "NOTESD_MIN_PASSWORD_SCORE", default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=4))]
    pub min_password_score: u8,

    /// `iss` claim of access tokens.
    #[arg(long, env = "NOTESD_TOKEN_ISSUER", default_value = "notesd")]
    pub token_issuer: String,

    /// `aud` claim of access tokens.
    #[arg(long, env = "NOTESD_TOKEN_AUDIENCE", default_value = "notesd")]
    pub token_audience: String,

    /// Verified access tokens remembered to skip repeated signature checks.
    #[arg(long, env = "NOTESD_TOKEN_CACHE_CAPACITY", default_value_t = 10_000)]
    pub token_cache_capacity: usize,

    /// Requests per minute per client IP on `/api/` routes; 0 switches the
    /// limit off.
    #[arg(long, env = "NOTESD_RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,

    /// Requests per minute per client IP on signup, login and refresh; 0
    /// switches the limit off.
    #[arg(long, env = "NOTESD_AUTH_RATE_LIMIT", default_value_t = 10)]
    pub auth_rate_limit: u32,

    /// Origins (e.g. `https://app.example.com`, comma-separated) allowed to
    /// call the API from a browser; none by default.
    #[arg(long, env = "NOTESD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Failed logins per account before it starts backing off.
    #[arg(long, env = "NOTESD_LOGIN_FREE_FAILURES", default_value_t = 5)]
    pub login_free_failures: u32,

    /// Longest wait an account backing off imposes, e.g. `15m`.
    #[arg(long, env = "NOTESD_LOGIN_BACKOFF_MAX", default_value = "15m", value_parser = humantime::parse_duration)]
    pub login_backoff_max: Duration,

    /// Proxies (CIDRs, comma-separated) whose X-Forwarded-For is believed;
    /// none by default.
    #[arg(long, env = "NOTESD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Database page cache, in MiB; pages beyond it come from the OS cache.
    #[arg(long, env = "NOTESD_DB_CACHE_MIB", default_value_t = 64)]
    pub db_cache_mib: usize,

    /// Time a connection has to deliver a complete request head (slowloris
    /// defence), e.g. `10s`.
    #[arg(long, env = "NOTESD_HEADER_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub header_timeout: Duration,

    /// Time a whole request (body upload and handling) may take.
    #[arg(long, env = "NOTESD_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// A connection with no traffic for this long is closed.
    #[arg(long, env = "NOTESD_IDLE_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub idle_timeout: Duration,

    /// Open connections at most; beyond, new ones wait in the kernel's
    /// backlog.
    #[arg(long, env = "NOTESD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Largest request head (all header lines) accepted, in bytes; larger
    /// ones get 431, and one over four times this closes the connection.
    #[arg(long, env = "NOTESD_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Largest request body accepted, in bytes; larger ones get 413.
    #[arg(long, env = "NOTESD_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    pub max_body_bytes: usize,

    /// Notes a `q` search reads per request before it returns what it has
    /// (with a cursor to continue), so one search cannot monopolise a core.
    #[arg(long, env = "NOTESD_SEARCH_SCAN_LIMIT", default_value_t = 2000)]
    pub search_scan_limit: usize,

    /// Serve Swagger UI at /docs and the spec at /openapi.json.
    #[arg(long, env = "NOTESD_DOCS", default_value_t = true, action = clap::ArgAction::Set)]
    pub docs: bool,

    /// How long shutdown waits for requests in flight.
    #[arg(long, env = "NOTESD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// Lets [`Settings::from_args`] parse settings on their own.
#[derive(clap::Parser)]
struct SettingsOnly {
    #[command(flatten)]
    settings: Settings,
}

impl Settings {
    /// Parses settings from flags (and `NOTESD_*` variables), as
    /// `notesd serve` would; with no flags, the defaults.
    pub fn from_args<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, clap::Error> {
        use clap::Parser;
        SettingsOnly::try_parse_from(std::iter::once("notesd").chain(args)).map(|s| s.settings)
    }

    pub fn hash_cost(&self) -> HashCost {
        HashCost {
            memory_kib: self.argon2_memory_kib,
            iterations: self.argon2_iterations,
            parallelism: self.argon2_parallelism,
        }
    }

    pub fn hash_pool(&self) -> HashPoolSize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        HashPoolSize {
            threads: self.hash_concurrency.unwrap_or(cores.saturating_sub(1)).max(1),
            queue: self.hash_queue,
        }
    }

    /// Rejects combinations that would weaken a guarantee.
    pub fn validate(&self) -> Result<(), String> {
        const DAY: u64 = 86_400;
        if self.access_token_ttl < Duration::from_secs(1) {
            return Err("--access-token-ttl must be at least 1s".into());
        }
        // Purging expired sessions relies on their access tokens being
        // expired too.
        if self.session_idle_ttl <= self.access_token_ttl {
            return Err("--session-idle-ttl must be longer than --access-token-ttl".into());
        }
        if self.session_absolute_ttl < self.session_idle_ttl {
            return Err("--session-absolute-ttl must not be shorter than --session-idle-ttl".into());
        }
        // Bounds that keep every date computation far from overflow.
        if self.access_token_ttl > Duration::from_secs(DAY) {
            return Err("--access-token-ttl must be at most 1 day".into());
        }
        if self.session_absolute_ttl > Duration::from_secs(3650 * DAY) {
            return Err("--session-absolute-ttl must be at most 10 years".into());
        }
        // A cap, not a lockout: the owner can always try again the next day.
        if self.login_backoff_max > Duration::from_secs(DAY) {
            return Err("--login-backoff-max must be at most 1 day".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("--max-body-bytes must be at least 1024".into());
        }
        if self.search_scan_limit == 0 {
            return Err("--search-scan-limit must be at least 1".into());
        }
        if self.token_issuer.is_empty() || self.token_audience.is_empty() {
            return Err("--token-issuer and --token-audience must not be empty".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Settings {
        Settings::from_args(args.iter().copied()).unwrap()
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let s = parse(&[]);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.session_idle_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(s.session_absolute_ttl, Duration::from_secs(90 * 86_400));
        assert_eq!(s.hash_cost(), HashCost::default());
        assert!(s.docs);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn unsafe_combinations_are_refused() {
        assert!(parse(&["--session-idle-ttl", "10m"]).validate().is_err());
        assert!(parse(&["--session-absolute-ttl", "1d"]).validate().is_err());
        assert!(parse(&["--access-token-ttl", "0s"]).validate().is_err());
        assert!(parse(&["--access-token-ttl", "2d"]).validate().is_err());
        assert!(
            parse(&[
                "--session-idle-ttl",
                "10000000years",
                "--session-absolute-ttl",
                "10000000years"
            ])
            .validate()
            .is_err()
        );
    }
}
