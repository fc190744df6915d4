//! Prometheus metrics, served on their own listener (`--metrics-listen`).
//!
//! Counters and histograms that requests touch are created once, at start,
//! for every route and status class, so a request pays an atomic add and
//! one histogram observation, never a label lookup in a locked map. What is
//! cheaper to read than to track (queue depths, the database size, stored
//! sessions, the certificate's expiry) is read at scrape time by
//! [`Live`].

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use poem::http::StatusCode;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Latency buckets, in seconds: from 100 µs (a cached read) to 10 s (a
/// request near its deadline). Fixed, so histograms from several nodes add
/// up.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

type Labels = Vec<(&'static str, String)>;

/// Requests by route template and status class, and their latency.
pub struct HttpMetrics {
    /// Operation id → index into `requests` and `latency`.
    index: HashMap<&'static str, usize>,
    requests: Vec<[Counter; 5]>,
    latency: Vec<Histogram>,
    /// The index for requests no operation answered (unknown routes,
    /// documentation, refusals before routing).
    other: usize,
}

impl HttpMetrics {
    fn new(registry: &mut Registry) -> Self {
        let requests_family = Family::<Labels, Counter>::default();
        let latency_family =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS));
        let mut routes: Vec<(Option<&'static str>, String, String)> = Vec::new();
        for api in <crate::api::Apis as poem_openapi::OpenApi>::meta() {
            for path in api.paths {
                for op in path.operations {
                    if let Some(id) = op.operation_id {
                        routes.push((Some(id), op.method.to_string(), path.path.clone()));
                    }
                }
            }
        }
        routes.push((None, "*".to_owned(), "other".to_owned()));
        let mut index = HashMap::new();
        let mut requests = Vec::new();
        let mut latency = Vec::new();
        for (i, (id, method, template)) in routes.iter().enumerate() {
            if let Some(id) = id {
                index.insert(*id, i);
            }
            let labels = |extra: Option<&str>| {
                let mut labels: Labels = vec![("method", method.clone()), ("route", template.clone())];
                if let Some(class) = extra {
                    labels.push(("status", class.to_owned()));
                }
                labels
            };
            requests.push(
                STATUS_CLASSES.map(|class| requests_family.get_or_create(&labels(Some(class))).clone()),
            );
            latency.push(latency_family.get_or_create(&labels(None)).clone());
        }
        registry.register(
            "http_requests",
            "Requests answered, by method, route template and status class",
            requests_family,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from the request head to the answer head, by method and route template",
            latency_family,
        );
        Self {
            index,
            requests,
            latency,
            other: routes.len() - 1,
        }
    }

    /// Counts one answer of `operation` (its OpenAPI operation id).
    pub fn record(&self, operation: Option<&'static str>, status: StatusCode, elapsed: Duration) {
        let route = operation
            .and_then(|id| self.index.get(id).copied())
            .unwrap_or(self.other);
        let class = usize::from(status.as_u16() / 100).clamp(1, 5) - 1;
        if let (Some(counters), Some(latency)) = (self.requests.get(route), self.latency.get(route)) {
            counters[class].inc();
            latency.observe(elapsed.as_secs_f64());
        }
    }
}

/// Security events of the authentication flows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum AuthEvent {
    Signup,
    LoginSucceeded,
    LoginFailed,
    /// A login refused unchecked because its account or client is backing
    /// off after failures.
    LoginBackedOff,
    Refreshed,
    RefreshFailed,
    /// A refresh token presented again after its grace: the session ended.
    RefreshReused,
    Logout,
    /// A bearer token that did not verify, expired or was revoked.
    TokenRejected,
}

impl AuthEvent {
    const ALL: [AuthEvent; 9] = [
        AuthEvent::Signup,
        AuthEvent::LoginSucceeded,
        AuthEvent::LoginFailed,
        AuthEvent::LoginBackedOff,
        AuthEvent::Refreshed,
        AuthEvent::RefreshFailed,
        AuthEvent::RefreshReused,
        AuthEvent::Logout,
        AuthEvent::TokenRejected,
    ];

    fn name(self) -> &'static str {
        match self {
            AuthEvent::Signup => "signup",
            AuthEvent::LoginSucceeded => "login_succeeded",
            AuthEvent::LoginFailed => "login_failed",
            AuthEvent::LoginBackedOff => "login_backed_off",
            AuthEvent::Refreshed => "refresh_succeeded",
            AuthEvent::RefreshFailed => "refresh_failed",
            AuthEvent::RefreshReused => "refresh_reused",
            AuthEvent::Logout => "logout",
            AuthEvent::TokenRejected => "token_rejected",
        }
    }
}

/// Counts of [`AuthEvent`]s and of requests refused by a rate limit. Kept
/// whether or not metrics are served: one relaxed add per event.
#[derive(Debug, Default)]
pub struct AuthCounters {
    events: [AtomicU64; AuthEvent::ALL.len()],
    /// Refused by the per-client limit on `/api/`, and on the auth routes.
    rate_limited: [AtomicU64; 2],
}

impl AuthCounters {
    pub fn record(&self, event: AuthEvent) {
        // `ALL` lists the events in declaration order (a test checks it).
        self.events[event as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn rate_limited(&self, auth_route: bool) {
        self.rate_limited[usize::from(auth_route)].fetch_add(1, Ordering::Relaxed);
    }
}

/// A queue's depth and its refusals, kept by the queue.
#[derive(Debug, Default)]
pub struct QueueStats {
    pub waiting: AtomicUsize,
    pub refused: AtomicU64,
}

/// The certificate served now, for its expiry.
#[derive(Debug, Default)]
pub struct CertExpiry(AtomicI64);

impl CertExpiry {
    /// Records the expiry of a newly served leaf certificate (DER).
    pub fn served(&self, leaf: &[u8]) {
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(leaf) {
            self.0
                .store(cert.validity().not_after.timestamp(), Ordering::Relaxed);
        }
    }

    /// Unix seconds at which the served certificate expires, once one is.
    pub fn get(&self) -> Option<i64> {
        Some(self.0.load(Ordering::Relaxed)).filter(|&t| t != 0)
    }
}

/// What the write path reports: writes waiting for the writer, and how
/// many writes each durable commit carried.
#[derive(Debug)]
pub struct WriteStats {
    pub waiting: AtomicUsize,
    /// Writes refused because the queue was full.
    pub refused: AtomicU64,
    pub batch: Histogram,
    /// The largest batch taken, for tests.
    #[cfg(test)]
    pub largest_batch: AtomicUsize,
}

impl Default for WriteStats {
    fn default() -> Self {
        Self {
            waiting: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
            #[cfg(test)]
            largest_batch: AtomicUsize::new(0),
            batch: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0]),
        }
    }
}

/// Values read at scrape time.
/// Scheduled backups made and failed, and when the last one succeeded.
#[derive(Debug, Default)]
pub struct BackupStats {
    pub made: AtomicU64,
    pub failed: AtomicU64,
    /// Unix time of the last success; 0: none yet.
    pub last_success: AtomicI64,
}

struct Live {
    backups: Arc<BackupStats>,
    auth: Arc<AuthCounters>,
    hashing: Arc<QueueStats>,
    writes: Arc<WriteStats>,
    db_file: PathBuf,
    /// Sessions stored, as read just before the scrape (-1: unknown).
    sessions: Arc<AtomicI64>,
    cert: Option<Arc<CertExpiry>>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("db_file", &self.db_file)
            .finish_non_exhaustive()
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let events = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        for (event, count) in AuthEvent::ALL.iter().zip(&self.auth.events) {
            events
                .get_or_create(&vec![("event", event.name())])
                .inc_by(count.load(Ordering::Relaxed));
        }
        encode(
            &mut encoder,
            "auth_events",
            "Authentication events, by kind",
            &events,
        )?;
        let limited = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        for (scope, count) in ["api", "auth"].iter().zip(&self.auth.rate_limited) {
            limited
                .get_or_create(&vec![("scope", *scope)])
                .inc_by(count.load(Ordering::Relaxed));
        }
        encode(
            &mut encoder,
            "rate_limited",
            "Requests refused by a per-client rate limit (429), by scope",
            &limited,
        )?;
        let gauge = |v: usize| ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
        encode(
            &mut encoder,
            "hash_queue_depth",
            "Password hashes waiting for a hashing thread",
            &gauge(self.hashing.waiting.load(Ordering::Relaxed)),
        )?;
        let refused = Counter::<u64>::default();
        refused.inc_by(self.hashing.refused.load(Ordering::Relaxed));
        encode(
            &mut encoder,
            "hash_queue_rejections",
            "Signups and logins refused (503) because the hashing queue was full",
            &refused,
        )?;
        encode(
            &mut encoder,
            "db_write_queue_depth",
            "Writes waiting for the database writer",
            &gauge(self.writes.waiting.load(Ordering::Relaxed)),
        )?;
        encode(
            &mut encoder,
            "db_writes_refused",
            "Writes refused with 503 because the writer's queue was full",
            &ConstCounter::new(self.writes.refused.load(Ordering::Relaxed)),
        )?;
        encode(
            &mut encoder,
            "db_commit_batch_size",
            "Writes made durable by each commit",
            &self.writes.batch,
        )?;
        let size = std::fs::metadata(&self.db_file).map_or(0, |m| m.len());
        encode(
            &mut encoder,
            "db_size_bytes",
            "Size of the database file",
            &gauge(usize::try_from(size).unwrap_or(usize::MAX)),
        )?;
        if let Ok(sessions) = usize::try_from(self.sessions.load(Ordering::Relaxed)) {
            encode(
                &mut encoder,
                "sessions",
                "Sessions stored (live, and ended ones not yet purged)",
                &gauge(sessions),
            )?;
        }
        self.encode_backups(&mut encoder)?;
        if let Some(expiry) = self.cert.as_ref().and_then(|c| c.get()) {
            encode(
                &mut encoder,
                "tls_certificate_expiry_timestamp_seconds",
                "When the TLS certificate served now expires (Unix time)",
                &ConstGauge::new(expiry),
            )?;
        }
        Ok(())
    }
}

impl Live {
    fn encode_backups(&self, encoder: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let backups = Family::<Vec<(&'static str, &'static str)>, Counter>::default();
        for (result, count) in [("ok", &self.backups.made), ("failed", &self.backups.failed)] {
            backups
                .get_or_create(&vec![("result", result)])
                .inc_by(count.load(Ordering::Relaxed));
        }
        encode(
            encoder,
            "scheduled_backups",
            "Scheduled backups (--backup-dir), by result",
            &backups,
        )?;
        let last = self.backups.last_success.load(Ordering::Relaxed);
        if last > 0 {
            encode(
                encoder,
                "backup_last_success_timestamp_seconds",
                "When the last scheduled backup succeeded (Unix time)",
                &ConstGauge::new(last),
            )?;
        }
        Ok(())
    }
}

fn encode(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    metric: &impl EncodeMetric,
) -> Result<(), std::fmt::Error> {
    let metric_encoder = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
    metric.encode(metric_encoder)
}

/// Everything `/metrics` shows.
pub struct Metrics {
    registry: Registry,
    pub http: HttpMetrics,
    storage: Arc<crate::storage::Backend>,
    sessions: Arc<AtomicI64>,
}

/// What the metrics read from the running server.
pub struct Sources {
    pub backups: Arc<BackupStats>,
    pub auth: Arc<AuthCounters>,
    pub hashing: Arc<QueueStats>,
    pub writes: Arc<WriteStats>,
    pub db_file: PathBuf,
    pub storage: Arc<crate::storage::Backend>,
    pub cert: Option<Arc<CertExpiry>>,
}

impl Metrics {
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::with_prefix("notesd");
        let http = HttpMetrics::new(&mut registry);
        let sessions = Arc::new(AtomicI64::new(-1));
        registry.register_collector(Box::new(Live {
            backups: sources.backups,
            auth: sources.auth,
            hashing: sources.hashing,
            writes: sources.writes,
            db_file: sources.db_file,
            sessions: sessions.clone(),
            cert: sources.cert,
        }));
        Self {
            registry,
            http,
            storage: sources.storage,
            sessions,
        }
    }

    /// The OpenMetrics text exposition (which Prometheus reads).
    pub async fn render(&self) -> String {
        use crate::storage::Storage;
        let sessions = self.storage.session_count().await.ok();
        self.sessions.store(
            sessions.and_then(|n| i64::try_from(n).ok()).unwrap_or(-1),
            Ordering::Relaxed,
        );
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "could not encode the metrics");
        }
        out
    }
}

/// The `Content-Type` of [`Metrics::render`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The metrics listener's one route: `GET /metrics`.
pub struct MetricsEndpoint {
    metrics: Arc<Metrics>,
}

impl MetricsEndpoint {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl poem::Endpoint for MetricsEndpoint {
    type Output = poem::Response;

    async fn call(&self, req: poem::Request) -> poem::Result<poem::Response> {
        use poem::http::{Method, header};
        let refuse = |status: StatusCode, detail: &str| {
            crate::error::problem_response(
                &crate::error::Error::Http {
                    status,
                    detail: detail.to_owned(),
                }
                .to_problem(),
            )
        };
        if req.uri().path() != "/metrics" {
            return Ok(refuse(StatusCode::NOT_FOUND, "Metrics are at /metrics."));
        }
        if req.method() != Method::GET && req.method() != Method::HEAD {
            let mut resp = refuse(StatusCode::METHOD_NOT_ALLOWED, "Metrics are read with GET.");
            resp.headers_mut()
                .insert(header::ALLOW, poem::http::HeaderValue::from_static("GET, HEAD"));
            return Ok(resp);
        }
        Ok(poem::Response::builder()
            .content_type(CONTENT_TYPE)
            .header(header::CACHE_CONTROL, "no-store")
            .body(self.metrics.render().await))
    }
}

/// Whether the metrics listener is reachable beyond this host (warned
/// about at start: the metrics have no authentication).
pub fn exposed(addr: std::net::SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_has_its_own_counter() {
        for (i, event) in AuthEvent::ALL.iter().enumerate() {
            assert_eq!(*event as usize, i, "{event:?}");
        }
        let counters = AuthCounters::default();
        counters.record(AuthEvent::TokenRejected);
        assert_eq!(
            counters.events[AuthEvent::ALL.len() - 1].load(Ordering::Relaxed),
            1
        );
    }

    #[test]
    fn only_loopback_metrics_are_unexposed() {
        for (addr, exposed_) in [
            ("127.0.0.1:9090", false),
            ("[::1]:9090", false),
            ("0.0.0.0:9090", true),
            ("[::]:9090", true),
            ("192.168.1.2:9090", true),
        ] {
            assert_eq!(exposed(addr.parse().unwrap()), exposed_, "{addr}");
        }
    }
}
