//! Server settings: one struct, defaults in code, every field a flag that
//! can also come from a `NOTESD_*` environment variable (flags win).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::auth::password::{HashCost, HashPoolSize};

/// Every setting of `notesd serve`, grouped by concern. Each group is a
/// section of the configuration file (see [`crate::cli::config`]); each
/// setting is a flag, a `NOTESD_*` variable and a key of its section.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub http: HttpSettings,

    #[command(flatten)]
    pub tls: TlsSettings,

    #[command(flatten)]
    pub auth: AuthSettings,

    #[command(flatten)]
    pub connections: ConnectionSettings,

    #[command(flatten)]
    pub limits: LimitSettings,

    #[command(flatten)]
    pub storage: StorageSettings,
}

/// Where the API listens and who may call it.
#[derive(Debug, Clone, Args)]
#[group(id = "http")]
#[command(next_help_heading = "HTTP")]
pub struct HttpSettings {
    /// Address and port to listen on.
    #[arg(long, env = "NOTESD_LISTEN", default_value = "127.0.0.1:8080", value_parser = parse_listen)]
    pub listen: SocketAddr,

    /// Also listen here for Prometheus scrapes of `GET /metrics` (e.g.
    /// `127.0.0.1:9090`); off by default. Keep it off the public network:
    /// the figures describe the server's load and its users' activity.
    #[arg(long, env = "NOTESD_METRICS_LISTEN", value_parser = parse_listen)]
    pub metrics_listen: Option<SocketAddr>,

    /// Serve Swagger UI at /docs and the spec at /openapi.json.
    #[arg(long, env = "NOTESD_DOCS", default_value_t = true, action = clap::ArgAction::Set)]
    pub docs: bool,

    /// Origins (e.g. `https://app.example.com`, comma-separated) allowed to
    /// call the API from a browser; none by default.
    #[arg(long, env = "NOTESD_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Vec<String>,

    /// Proxies (CIDRs, comma-separated) whose X-Forwarded-For is believed;
    /// none by default.
    #[arg(long, env = "NOTESD_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Length of the IPv6 prefix that counts as one client for every
    /// per-client limit (a host is routinely given a whole /64).
    #[arg(long, env = "NOTESD_IPV6_PREFIX", default_value_t = 64, value_parser = clap::value_parser!(u8).range(1..=128))]
    pub ipv6_prefix: u8,

    /// How long shutdown waits for requests in flight.
    #[arg(long, env = "NOTESD_SHUTDOWN_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,
}

/// HTTPS: certificates from files or ACME, the redirect listener, HSTS.
#[derive(Debug, Clone, Args)]
#[group(id = "tls")]
#[command(next_help_heading = "TLS")]
pub struct TlsSettings {
    /// HTTPS: `off` (plain HTTP, for local use or behind a proxy), `files`
    /// (`--tls-cert` and `--tls-key`) or `acme` (certificates obtained and
    /// renewed automatically for `--acme-domain`).
    #[arg(long = "tls", env = "NOTESD_TLS", value_enum, default_value_t = TlsMode::Off)]
    pub mode: TlsMode,

    /// PEM certificate chain (leaf first) for `--tls files`; re-read when it
    /// changes or on SIGHUP.
    #[arg(long, env = "NOTESD_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key for `--tls files` (PKCS#8, PKCS#1 or SEC1).
    #[arg(long, env = "NOTESD_TLS_KEY")]
    pub tls_key: Option<PathBuf>,

    /// How often `--tls files` reads the files to see whether they changed.
    #[arg(long, env = "NOTESD_TLS_RELOAD_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub tls_reload_interval: Duration,

    /// Domain to obtain a certificate for with `--tls acme` (repeat the flag,
    /// or separate with commas in the environment).
    #[arg(long, env = "NOTESD_ACME_DOMAIN", value_delimiter = ',')]
    pub acme_domain: Vec<String>,

    /// Contact address given to the certificate authority (expiry notices).
    #[arg(long, env = "NOTESD_ACME_EMAIL")]
    pub acme_email: Option<String>,

    /// ACME directory: `production` or `staging` (Let's Encrypt), or the
    /// https URL of another directory.
    #[arg(long, env = "NOTESD_ACME_DIRECTORY", default_value = "production")]
    pub acme_directory: String,

    /// PEM file of an extra root certificate trusted when talking to the
    /// ACME directory (for a private certificate authority).
    #[arg(long, env = "NOTESD_ACME_CA_ROOT")]
    pub acme_ca_root: Option<PathBuf>,

    /// Also listen here for plain HTTP and answer every request with a 308
    /// redirect to the https URL, e.g. `:80` (every address, as `[::]:80`).
    #[arg(long, env = "NOTESD_HTTP_REDIRECT_LISTEN", value_parser = parse_listen)]
    pub http_redirect_listen: Option<SocketAddr>,

    /// `max-age` of the Strict-Transport-Security header sent on every
    /// HTTPS answer (0 tells browsers to forget an earlier policy).
    #[arg(long, env = "NOTESD_HSTS_MAX_AGE", default_value_t = 63_072_000)]
    pub hsts_max_age: u64,

    /// Whether the HSTS policy also covers every subdomain.
    #[arg(long, env = "NOTESD_HSTS_INCLUDE_SUBDOMAINS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts_include_subdomains: bool,
}

/// Tokens, sessions, password hashing and the login backoff.
#[derive(Debug, Clone, Args)]
#[group(id = "auth")]
#[command(next_help_heading = "Auth")]
pub struct AuthSettings {
    /// Life of an access token, e.g. `15m`.
    #[arg(long, env = "NOTESD_ACCESS_TOKEN_TTL", default_value = "15m", value_parser = humantime::parse_duration)]
    pub access_token_ttl: Duration,

    /// A session not refreshed for this long ends, e.g. `30d`.
    #[arg(long, env = "NOTESD_SESSION_IDLE_TTL", default_value = "30d", value_parser = humantime::parse_duration)]
    pub session_idle_ttl: Duration,

    /// A session ends this long after login whatever its use, e.g. `90d`.
    #[arg(long, env = "NOTESD_SESSION_ABSOLUTE_TTL", default_value = "90d", value_parser = humantime::parse_duration)]
    pub session_absolute_ttl: Duration,

    /// Who may sign up: anyone (`open`), holders of an admin's one-time
    /// invite code (`invite`), or nobody (`closed`: accounts are made by
    /// an admin or `notesd user create`).
    #[arg(long, env = "NOTESD_SIGNUP", value_enum, default_value = "open")]
    pub signup: SignupPolicy,

    /// Life of an invite code when its creator names none, e.g. `7d`.
    #[arg(long, env = "NOTESD_INVITE_TTL", default_value = "7d", value_parser = humantime::parse_duration)]
    pub invite_ttl: Duration,

    /// The issuer authenticator apps show beside a TOTP account (usually
    /// the server's name).
    #[arg(long, env = "NOTESD_TOTP_ISSUER", default_value = "notesd")]
    pub totp_issuer: String,

    /// Life of the token a login's password step gives an account with
    /// two-factor login on, for its second step.
    #[arg(long, env = "NOTESD_MFA_LOGIN_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub mfa_login_ttl: Duration,

    /// Logins waiting for their second step at once; past it, password
    /// steps of such accounts get 503 with Retry-After.
    #[arg(long, env = "NOTESD_MAX_PENDING_MFA_LOGINS", default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_pending_mfa_logins: u32,

    /// Logins waiting for their second step at once per account and kind
    /// of client (a known device, a known address, any other client); a
    /// new one replaces the oldest of its kind.
    #[arg(long, env = "NOTESD_MAX_PENDING_MFA_LOGINS_PER_ACCOUNT", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub max_pending_mfa_logins_per_account: u32,

    /// Wrong codes one MFA token may be tried with before the login has to
    /// start again with the password.
    #[arg(long, env = "NOTESD_MFA_LOGIN_TRIES", default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=20))]
    pub mfa_login_tries: u8,

    /// Admin operations need a session whose login passed a second factor.
    #[arg(long, env = "NOTESD_ADMINS_NEED_MFA", default_value_t = false, action = clap::ArgAction::Set)]
    pub admins_need_mfa: bool,

    /// Stored audit events older than this are purged, e.g. `365d`.
    #[arg(long, env = "NOTESD_AUDIT_RETENTION", default_value = "365d", value_parser = humantime::parse_duration)]
    pub audit_retention: Duration,

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

    /// After a refresh, presenting the refresh token it replaced within this
    /// long (a retry after a lost answer) returns the same new refresh
    /// token instead of ending the session; later, it ends the session.
    #[arg(long, env = "NOTESD_REFRESH_REUSE_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub refresh_reuse_grace: Duration,

    /// Failed logins per account before it starts backing off.
    #[arg(long, env = "NOTESD_LOGIN_FREE_FAILURES", default_value_t = 5)]
    pub login_free_failures: u32,

    /// Failed-login counters kept in memory at most (those of emails with
    /// no account live only there; the oldest idle ones are dropped).
    #[arg(long, env = "NOTESD_MAX_LOGIN_COUNTERS", default_value_t = 100_000)]
    pub max_login_counters: usize,

    /// Longest wait an account backing off imposes, e.g. `15m`.
    #[arg(long, env = "NOTESD_LOGIN_BACKOFF_MAX", default_value = "15m", value_parser = humantime::parse_duration)]
    pub login_backoff_max: Duration,
}

/// Timeouts, connection caps, HTTP/2 and the memory budgets of bodies in flight.
#[derive(Debug, Clone, Args)]
#[group(id = "connections")]
#[command(next_help_heading = "Connections")]
pub struct ConnectionSettings {
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

    /// A connection that owes response bytes and has moved none for this
    /// long (its peer does not read) is closed.
    #[arg(long, env = "NOTESD_WRITE_TIMEOUT", default_value = "20s", value_parser = humantime::parse_duration)]
    pub write_timeout: Duration,

    /// Open connections at most; beyond, new ones wait in the kernel's
    /// backlog.
    #[arg(long, env = "NOTESD_MAX_CONNECTIONS", default_value_t = 1024)]
    pub max_connections: usize,

    /// Open connections one client may hold (an IPv4 address or an IPv6
    /// prefix, see `--ipv6-prefix`); more are closed at once. Trusted
    /// proxies are exempt. 0 switches the cap off.
    #[arg(long, env = "NOTESD_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 16)]
    pub max_connections_per_client: usize,

    /// Largest request head (all header lines) accepted, in bytes; larger
    /// ones get 431, and one over four times this closes the connection.
    #[arg(long, env = "NOTESD_MAX_HEADER_BYTES", default_value_t = 16 * 1024)]
    pub max_header_bytes: usize,

    /// Requests one HTTP/2 connection may have in flight at once (the
    /// connection cap does not see streams).
    #[arg(long, env = "NOTESD_HTTP2_MAX_STREAMS", default_value_t = 100)]
    pub http2_max_streams: u32,

    /// How often an HTTP/2 connection is pinged.
    #[arg(long, env = "NOTESD_HTTP2_KEEPALIVE_INTERVAL", default_value = "20s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_interval: Duration,

    /// An HTTP/2 connection whose ping is not answered within this is closed.
    #[arg(long, env = "NOTESD_HTTP2_KEEPALIVE_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub http2_keepalive_timeout: Duration,

    /// Request and response body bytes one connection may hold in memory at
    /// once; its further requests wait.
    #[arg(long, env = "NOTESD_CONNECTION_BUFFER_BYTES", default_value_t = 2 * 1024 * 1024)]
    pub connection_buffer_bytes: usize,

    /// Request and response body bytes one client (an address, or an IPv6
    /// prefix) may hold in memory at once, over all its connections.
    #[arg(long, env = "NOTESD_CLIENT_BUFFER_BYTES", default_value_t = 4 * 1024 * 1024)]
    pub client_buffer_bytes: usize,

    /// Request and response body bytes the whole server may hold in memory
    /// at once; further requests wait (503 after `--write-timeout`).
    #[arg(long, env = "NOTESD_MAX_BUFFERED_BYTES", default_value_t = 128 * 1024 * 1024)]
    pub max_buffered_bytes: usize,
}

/// Request rates, sizes, account quotas and search budgets.
#[derive(Debug, Clone, Args)]
#[group(id = "limits")]
#[command(next_help_heading = "Limits")]
pub struct LimitSettings {
    /// Requests per minute per client IP on `/api/` routes; 0 switches the
    /// limit off.
    #[arg(long, env = "NOTESD_RATE_LIMIT", default_value_t = 600)]
    pub rate_limit: u32,

    /// Requests per minute per client IP on signup, login (both steps),
    /// refresh, and the routes that check a password or a second-factor
    /// code; 0 switches the limit off.
    #[arg(long, env = "NOTESD_AUTH_RATE_LIMIT", default_value_t = 10)]
    pub auth_rate_limit: u32,

    /// Largest request body accepted, in bytes; larger ones get 413.
    /// The default, 1.25 MiB, holds the largest note the document allows
    /// even with every character written as a JSON escape (100 000 emoji
    /// as surrogate-pair escapes are 1.2 MB).
    #[arg(long, env = "NOTESD_MAX_BODY_BYTES", default_value_t = 1280 * 1024)]
    pub max_body_bytes: usize,

    /// Largest list page, in bytes of JSON; a page that would be larger ends
    /// early with a `next_cursor` (a single note is always sent whole).
    #[arg(long, env = "NOTESD_MAX_PAGE_BYTES", default_value_t = 1024 * 1024)]
    pub max_page_bytes: usize,

    /// Notes one account may hold.
    #[arg(long, env = "NOTESD_MAX_NOTES_PER_ACCOUNT", default_value_t = 100_000)]
    pub max_notes_per_account: u64,

    /// Bytes of note text (titles, contents, tags) one account may hold.
    #[arg(long, env = "NOTESD_MAX_BYTES_PER_ACCOUNT", default_value_t = 256 * 1024 * 1024)]
    pub max_bytes_per_account: u64,

    /// Notes a `q` search reads per request before it returns what it has
    /// (with a cursor to continue), so one search cannot monopolise a core.
    #[arg(long, env = "NOTESD_SEARCH_SCAN_LIMIT", default_value_t = 2000)]
    pub search_scan_limit: usize,

    /// Bytes of note text a `q` search reads per request before it returns
    /// what it has (with a cursor to continue).
    #[arg(long, env = "NOTESD_SEARCH_SCAN_BYTES", default_value_t = 8 * 1024 * 1024)]
    pub search_scan_bytes: usize,

    /// Searches one account may run at once; more get 429.
    #[arg(long, env = "NOTESD_MAX_SEARCHES_PER_ACCOUNT", default_value_t = 2)]
    pub max_searches_per_account: usize,
}

/// The data directory and the database.
#[derive(Debug, Clone, Args)]
#[group(id = "storage")]
#[command(next_help_heading = "Storage")]
pub struct StorageSettings {
    /// Directory for the database and the token signing keys (made 0700).
    #[arg(long, env = "NOTESD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,

    /// Database page cache, in MiB; pages beyond it come from the OS cache.
    #[arg(long, env = "NOTESD_DB_CACHE_MIB", default_value_t = crate::storage::redb::DEFAULT_CACHE_BYTES / (1024 * 1024))]
    pub db_cache_mib: usize,

    /// Writes that may wait for the database writer; past it, writes get
    /// 503 with Retry-After at once.
    #[arg(long, env = "NOTESD_WRITE_QUEUE", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..))]
    pub write_queue: u32,

    /// The master key that seals the data at rest, kept outside the data
    /// directory [default: $CREDENTIALS_DIRECTORY/master.key under systemd,
    /// else $XDG_CONFIG_HOME/notesd/master.key or
    /// ~/.config/notesd/master.key]. Made at the first start.
    #[arg(long, env = "NOTESD_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,

    /// Directory for scheduled backups (`notesd backup` every
    /// `--backup-every`); none: no schedule.
    #[arg(long, env = "NOTESD_BACKUP_DIR")]
    pub backup_dir: Option<PathBuf>,

    /// How often a scheduled backup is made, e.g. `24h`.
    #[arg(long, env = "NOTESD_BACKUP_EVERY", default_value = "24h", value_parser = humantime::parse_duration)]
    pub backup_every: Duration,

    /// Scheduled backups kept; older ones are deleted.
    #[arg(long, env = "NOTESD_BACKUP_KEEP", default_value_t = 7, value_parser = clap::value_parser!(u32).range(1..))]
    pub backup_keep: u32,
}

impl StorageSettings {
    /// The master key file: the one set, or the default place.
    pub fn master_key_path(&self) -> Option<PathBuf> {
        self.master_key_file
            .clone()
            .or_else(crate::masterkey::default_path)
    }
}

/// Who may create an account with `POST /api/v1/auth/signup`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignupPolicy {
    Open,
    Invite,
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsMode {
    Off,
    Files,
    Acme,
}

/// A socket address; `:port` alone means every address, IPv6 and (on a
/// dual-stack Linux host, the default) IPv4.
fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let full = if s.starts_with(':') {
        format!("[::]{s}")
    } else {
        s.to_owned()
    };
    full.parse().map_err(|_| format!("`{s}` is not an address:port"))
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
            memory_kib: self.auth.argon2_memory_kib,
            iterations: self.auth.argon2_iterations,
            parallelism: self.auth.argon2_parallelism,
        }
    }

    pub fn hash_pool(&self) -> HashPoolSize {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        HashPoolSize {
            threads: self
                .auth
                .hash_concurrency
                .unwrap_or(cores.saturating_sub(1))
                .max(1),
            queue: self.auth.hash_queue,
        }
    }

    /// Rejects combinations that would weaken a guarantee.
    pub fn validate(&self) -> Result<(), String> {
        const DAY: u64 = 86_400;
        if self.auth.access_token_ttl < Duration::from_secs(1) {
            return Err("--access-token-ttl must be at least 1s".into());
        }
        if self.auth.mfa_login_ttl < Duration::from_secs(30)
            || self.auth.mfa_login_ttl > Duration::from_secs(3600)
        {
            return Err("--mfa-login-ttl must be between 30s and 1h".into());
        }
        if self.auth.totp_issuer.trim().is_empty() || self.auth.totp_issuer.len() > 64 {
            return Err("--totp-issuer must be 1 to 64 characters".into());
        }
        if self.auth.invite_ttl < Duration::from_secs(60)
            || self.auth.invite_ttl > Duration::from_secs(365 * DAY)
        {
            return Err("--invite-ttl must be between 1m and 365d".into());
        }
        if self.storage.backup_every < Duration::from_secs(1) {
            return Err("--backup-every must be at least 1s".into());
        }
        if self.auth.audit_retention < Duration::from_secs(DAY) {
            return Err("--audit-retention must be at least 1d".into());
        }
        // Purging expired sessions relies on their access tokens being
        // expired too.
        if self.auth.session_idle_ttl <= self.auth.access_token_ttl {
            return Err("--session-idle-ttl must be longer than --access-token-ttl".into());
        }
        if self.auth.session_absolute_ttl < self.auth.session_idle_ttl {
            return Err("--session-absolute-ttl must not be shorter than --session-idle-ttl".into());
        }
        // Bounds that keep every date computation far from overflow.
        if self.auth.access_token_ttl > Duration::from_secs(DAY) {
            return Err("--access-token-ttl must be at most 1 day".into());
        }
        if self.auth.session_absolute_ttl > Duration::from_secs(3650 * DAY) {
            return Err("--session-absolute-ttl must be at most 10 years".into());
        }
        // A cap, not a lockout: the owner can always try again the next day.
        if self.auth.login_backoff_max > Duration::from_secs(DAY) {
            return Err("--login-backoff-max must be at most 1 day".into());
        }
        if self.limits.max_body_bytes < 1024 {
            return Err("--max-body-bytes must be at least 1024".into());
        }
        if self.limits.search_scan_limit == 0 {
            return Err("--search-scan-limit must be at least 1".into());
        }
        if self.connections.write_timeout < Duration::from_millis(100) {
            return Err("--write-timeout must be at least 100ms".into());
        }
        if self.connections.http2_keepalive_interval < Duration::from_millis(100)
            || self.connections.http2_keepalive_timeout < Duration::from_millis(100)
        {
            return Err(
                "--http2-keepalive-interval and --http2-keepalive-timeout must be at least 100ms".into(),
            );
        }
        if self.limits.max_page_bytes < 4096 {
            return Err("--max-page-bytes must be at least 4096".into());
        }
        if self.connections.connection_buffer_bytes < 64 * 1024 {
            return Err("--connection-buffer-bytes must be at least 65536".into());
        }
        if self.connections.client_buffer_bytes < self.connections.connection_buffer_bytes {
            return Err("--client-buffer-bytes must be at least --connection-buffer-bytes".into());
        }
        if self.connections.max_buffered_bytes < self.connections.client_buffer_bytes {
            return Err("--max-buffered-bytes must be at least --client-buffer-bytes".into());
        }
        if self.limits.search_scan_bytes == 0 || self.limits.max_searches_per_account == 0 {
            return Err("--search-scan-bytes and --max-searches-per-account must be at least 1".into());
        }
        if self.auth.refresh_reuse_grace > Duration::from_secs(300) {
            return Err("--refresh-reuse-grace must be at most 5m".into());
        }
        if self.connections.http2_max_streams == 0 {
            return Err("--http2-max-streams must be at least 1".into());
        }
        argon2::Params::new(
            self.auth.argon2_memory_kib,
            self.auth.argon2_iterations,
            self.auth.argon2_parallelism,
            None,
        )
        .map_err(|e| format!("--argon2-memory-kib, --argon2-iterations, --argon2-parallelism: {e}"))?;
        if self.auth.token_issuer.is_empty() || self.auth.token_audience.is_empty() {
            return Err("--token-issuer and --token-audience must not be empty".into());
        }
        self.validate_tls()
    }

    fn validate_tls(&self) -> Result<(), String> {
        let files_set = self.tls.tls_cert.is_some() || self.tls.tls_key.is_some();
        let acme_set = !self.tls.acme_domain.is_empty()
            || self.tls.acme_email.is_some()
            || self.tls.acme_ca_root.is_some();
        match self.tls.mode {
            TlsMode::Off => {
                // A certificate or domain that is silently ignored would
                // leave the operator believing traffic is encrypted.
                if files_set || acme_set {
                    return Err("TLS options are given but --tls is off".into());
                }
                if self.tls.http_redirect_listen.is_some() {
                    return Err("--http-redirect-listen needs --tls files or --tls acme".into());
                }
            }
            TlsMode::Files => {
                if self.tls.tls_cert.is_none() || self.tls.tls_key.is_none() {
                    return Err("--tls files needs --tls-cert and --tls-key".into());
                }
                if acme_set {
                    return Err("--acme-* options need --tls acme".into());
                }
                if self.tls.tls_reload_interval < Duration::from_millis(100) {
                    return Err("--tls-reload-interval must be at least 100ms".into());
                }
            }
            TlsMode::Acme => {
                if files_set {
                    return Err("--tls-cert and --tls-key need --tls files".into());
                }
                if self.tls.acme_domain.is_empty() {
                    return Err("--tls acme needs at least one --acme-domain".into());
                }
                for domain in &self.tls.acme_domain {
                    if !is_dns_name(&domain.to_ascii_lowercase()) {
                        return Err(format!("--acme-domain `{domain}` is not a DNS name"));
                    }
                }
                if self
                    .tls
                    .acme_email
                    .as_deref()
                    .is_some_and(|e| !is_contact_email(e))
                {
                    return Err("--acme-email is not an email address".into());
                }
                self.acme_directory_url()?;
            }
        }
        if self
            .tls
            .http_redirect_listen
            .is_some_and(|r| r == self.http.listen)
        {
            return Err("--http-redirect-listen must differ from --listen".into());
        }
        // Port 0 (any free port) is never a clash.
        if let Some(at) = self.http.metrics_listen
            && at.port() != 0
            && (at == self.http.listen || Some(at) == self.tls.http_redirect_listen)
        {
            return Err("--metrics-listen must differ from --listen and --http-redirect-listen".into());
        }
        Ok(())
    }

    /// The ACME directory URL `--acme-directory` names.
    pub fn acme_directory_url(&self) -> Result<String, String> {
        match self.tls.acme_directory.as_str() {
            "production" => Ok("https://acme-v02.api.letsencrypt.org/directory".into()),
            "staging" => Ok("https://acme-staging-v02.api.letsencrypt.org/directory".into()),
            url => {
                // Parsed now, so a typo is an error at start rather than an
                // order failing forever in the background.
                let parsed: poem::http::Uri = url
                    .parse()
                    .map_err(|_| format!("--acme-directory `{url}` is not a URL"))?;
                if parsed.scheme_str() != Some("https") || parsed.host().is_none_or(str::is_empty) {
                    return Err("--acme-directory must be production, staging or an https:// URL".into());
                }
                Ok(url.into())
            }
        }
    }

    /// The ACME domains, lower-cased, each once, in the order given.
    pub fn acme_domains(&self) -> Vec<String> {
        let mut domains: Vec<String> = Vec::with_capacity(self.tls.acme_domain.len());
        for domain in &self.tls.acme_domain {
            let domain = domain.to_ascii_lowercase();
            if !domains.contains(&domain) {
                domains.push(domain);
            }
        }
        domains
    }
}

/// A host name a public CA can issue for: letters, digits and hyphens in
/// dot-separated labels, no wildcard (TLS-ALPN-01 cannot prove one), no
/// trailing dot, no IP address.
fn is_dns_name(s: &str) -> bool {
    let labels_ok = s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    });
    let last_is_numeric = s
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()));
    labels_ok && s.len() <= 253 && !last_is_numeric
}

/// Enough of an address to be a `mailto:` contact: one `@`, no spaces or
/// URL syntax that would change the contact URI.
fn is_contact_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
        && s.len() <= 254
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"?#/,;<>\\\"".contains(&b))
        && !domain.contains('@')
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
        assert_eq!(s.http.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.auth.access_token_ttl, Duration::from_secs(900));
        assert_eq!(s.auth.session_idle_ttl, Duration::from_secs(30 * 86_400));
        assert_eq!(s.auth.session_absolute_ttl, Duration::from_secs(90 * 86_400));
        assert_eq!(s.auth.audit_retention, Duration::from_secs(365 * 86_400));
        assert_eq!(s.hash_cost(), HashCost::default());
        assert!(s.http.docs);
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

    #[test]
    fn tls_options_must_match_the_mode() {
        let ok = |args: &[&str]| parse(args).validate();
        // `--tls acme` for a.org, plus `extra`.
        let acme = |extra: &[&str]| {
            let mut args = vec!["--tls", "acme", "--acme-domain", "a.org"];
            args.extend_from_slice(extra);
            parse(&args)
        };
        assert!(ok(&["--tls", "files", "--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_ok());
        assert!(ok(&["--tls", "files", "--tls-cert", "c.pem"]).is_err());
        // A certificate given while TLS is off would be silently ignored.
        assert!(ok(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]).is_err());
        assert!(ok(&["--http-redirect-listen", ":80"]).is_err());
        assert!(ok(&["--tls", "acme"]).is_err());
        assert!(acme(&[]).validate().is_ok());
        assert!(acme(&["--acme-domain", "*.example.org"]).validate().is_err());
        assert!(acme(&["--acme-domain", "127.0.0.1"]).validate().is_err());
        for directory in ["http://x", "https://a b/d", "https:///d"] {
            assert!(
                acme(&["--acme-directory", directory]).validate().is_err(),
                "{directory}"
            );
        }
        for email in ["me@x.org?cc=y", "me@b..org", "me@x."] {
            assert!(acme(&["--acme-email", email]).validate().is_err(), "{email}");
        }
        assert!(acme(&["--acme-email", "me@x.org"]).validate().is_ok());

        let s = acme(&["--acme-domain", "A.org", "--http-redirect-listen", ":80"]);
        assert!(s.validate().is_ok());
        assert_eq!(s.acme_domains(), ["a.org"], "lower-cased, each once");
        assert_eq!(
            s.tls.http_redirect_listen.map(|a| a.to_string()).as_deref(),
            Some("[::]:80")
        );
        assert_eq!(
            s.acme_directory_url().unwrap(),
            "https://acme-v02.api.letsencrypt.org/directory"
        );
    }
}
