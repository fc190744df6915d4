//! Builds the server from settings: opens the data directory, assembles the
//! routes and serves them on an already-bound listener until shutdown.
//! `notesd serve` and the integration tests both go through
//! [`Application::build`], so tests exercise exactly what ships.

use std::fs;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use poem::listener::TcpAcceptor;
use poem::{Endpoint, EndpointExt, IntoEndpoint, Request, Response};

use crate::api::{self, AppState};
use crate::auth::Auth;
use crate::auth::backoff::{Attempts, BackoffPolicy};
use crate::auth::keyring::{KeyRing, KeyringError, RingFile};
use crate::auth::mfa::{MfaPolicy, PendingLimits, PendingLogins};
use crate::auth::password::Passwords;
use crate::auth::sessions::{RevokedSessions, SessionLimits};
use crate::auth::tokens::Tokens;
use crate::client::ClientKeys;
use crate::clock::Clock;
use crate::listener::{ConnectionLimits, GuardedAcceptor, ParserAnswers};
use crate::masterkey::{MasterKeyError, MasterKeys};
use crate::metrics::{Metrics, Sources};
use crate::middleware::cors::CorsPolicy;
use crate::middleware::headers::SecurityHeaders;
use crate::middleware::rate_limit::{Limiters, RateLimitConfig};
use crate::middleware::{FrontConfig, front};
use crate::redirect::{RedirectHosts, RedirectToHttps};
use crate::server::ServeOptions;
use crate::settings::{Settings, TlsMode};
use crate::storage::{Backend, Db, Storage, StorageError};
use crate::tls::acme::Acme;
use crate::tls::files::CertFiles;
use crate::tls::{Handshake, TlsAcceptor};

/// The database file inside the data directory.
pub const DB_FILE: &str = "notesd.redb";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("invalid settings: {0}")]
    Settings(String),
    #[error("data directory {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] StorageError),
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
}

/// What `notesd check-config` checks beyond the settings themselves: the
/// files the start would read (certificate and key, an extra ACME root),
/// read now, without opening the database or binding a port.
pub fn check_start(settings: &Settings) -> Result<(), StartupError> {
    settings.validate().map_err(StartupError::Settings)?;
    match settings.tls.mode {
        TlsMode::Off => {}
        TlsMode::Files => {
            if let (Some(cert), Some(key)) = (&settings.tls.tls_cert, &settings.tls.tls_key) {
                CertFiles::load(cert, key).map_err(StartupError::Tls)?;
            }
        }
        TlsMode::Acme => crate::tls::acme::check_ca_root(settings).map_err(StartupError::Tls)?,
    }
    Ok(())
}

/// Where certificates come from, once checked at start.
enum TlsSource {
    Files(Arc<CertFiles>),
    Acme(Acme),
}

pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    settings: Settings,
    state: Arc<AppState>,
    tls: Option<TlsSource>,
    redirect: Option<(TcpAcceptor, SocketAddr)>,
    metrics: Option<(TcpAcceptor, SocketAddr)>,
    /// The control socket the administration commands reach.
    control: tokio::net::UnixListener,
}

impl Application {
    /// Opens everything `settings` names and prepares to serve on `listener`.
    pub async fn build(settings: Settings, listener: tokio::net::TcpListener) -> Result<Self, StartupError> {
        Self::build_with_clock(settings, listener, Clock::default()).await
    }

    /// As [`Application::build`], with a clock tests can move.
    pub async fn build_with_clock(
        settings: Settings,
        listener: tokio::net::TcpListener,
        clock: Clock,
    ) -> Result<Self, StartupError> {
        settings.validate().map_err(StartupError::Settings)?;
        let addr = listener
            .local_addr()
            .map_err(|e| StartupError::Other(e.to_string()))?;
        let acceptor = TcpAcceptor::from_tokio(listener).map_err(|e| StartupError::Other(e.to_string()))?;

        let state = {
            let settings = settings.clone();
            let clock = clock.clone();
            // Opening the database, reading keys and computing the dummy
            // hash all block.
            tokio::task::spawn_blocking(move || open_state(&settings, clock))
                .await
                .map_err(|e| StartupError::Other(e.to_string()))??
        };
        let state = Arc::new(state);
        match state.auth.purge_dead_sessions().await {
            Ok(n) if n > 0 => tracing::info!(removed = n, "purged dead sessions"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not purge dead sessions"),
        }
        let tls = match settings.tls.mode {
            TlsMode::Off => None,
            TlsMode::Files => {
                let (Some(cert), Some(key)) = (&settings.tls.tls_cert, &settings.tls.tls_key) else {
                    return Err(StartupError::Settings(
                        "--tls files needs --tls-cert and --tls-key".into(),
                    ));
                };
                Some(TlsSource::Files(Arc::new(
                    CertFiles::load(cert, key).map_err(StartupError::Tls)?,
                )))
            }
            TlsMode::Acme => {
                let key = state
                    .auth
                    .tokens
                    .with_ring(|ring| crate::seal::mac(ring.data_key(), &[b"notesd acme cache"]))
                    .map_err(StartupError::Other)?;
                Some(TlsSource::Acme(
                    Acme::prepare(&settings, key).map_err(StartupError::Tls)?,
                ))
            }
        };
        let redirect = match settings.tls.http_redirect_listen {
            Some(at) => Some(bind(at).await?),
            None => None,
        };
        let metrics = match settings.http.metrics_listen {
            Some(at) => Some(bind(at).await?),
            None => None,
        };
        let dir = &settings.storage.data_dir;
        let control = crate::control::bind(dir).map_err(|source| StartupError::DataDir {
            path: crate::control::socket_path(dir).display().to_string(),
            source,
        })?;
        Ok(Self {
            acceptor,
            addr,
            settings,
            state,
            tls,
            redirect,
            metrics,
            control,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The plain-HTTP redirect listener's address, if there is one.
    pub fn redirect_addr(&self) -> Option<SocketAddr> {
        self.redirect.as_ref().map(|(_, addr)| *addr)
    }

    /// What `/metrics` shows, read from the running parts.
    fn metrics_registry(&self) -> Arc<Metrics> {
        let cert = match &self.tls {
            Some(TlsSource::Files(files)) => Some(files.expiry()),
            Some(TlsSource::Acme(acme)) => Some(acme.expiry()),
            None => None,
        };
        Arc::new(Metrics::new(Sources {
            auth: self.state.auth.events.clone(),
            hashing: self.state.auth.passwords.queue_stats(),
            writes: self.state.db.write_stats(),
            db_file: self.settings.storage.data_dir.join(DB_FILE),
            storage: self.state.db.clone(),
            cert,
            backups: self.state.backups.clone(),
        }))
    }

    /// The metrics listener's address, if there is one.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, addr)| *addr)
    }

    /// With `--tls files`, the certificate files (to reload on SIGHUP).
    pub fn cert_files(&self) -> Option<Arc<CertFiles>> {
        match &self.tls {
            Some(TlsSource::Files(files)) => Some(files.clone()),
            _ => None,
        }
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests
    /// in flight finish (up to the configured grace) and closes the database.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let hsts = self.tls.is_some().then_some((
            self.settings.tls.hsts_max_age,
            self.settings.tls.hsts_include_subdomains,
        ));
        let redirect_hosts = match &self.tls {
            Some(TlsSource::Files(files)) => RedirectHosts::Certificate(files.clone()),
            _ => RedirectHosts::Listed(self.settings.acme_domains()),
        };
        let metrics = self.metrics.as_ref().map(|_| self.metrics_registry());
        // First what can fail, so a failure leaves nothing running.
        let tls = start_tls(self.tls, &self.settings)?;
        tracing::info!(addr = %self.addr, scheme, "notesd listening");
        let keys = ClientKeys::new(self.settings.http.ipv6_prefix);
        let limiters = Arc::new(Limiters::new(&RateLimitConfig {
            per_minute: self.settings.limits.rate_limit,
            auth_per_minute: self.settings.limits.auth_rate_limit,
            trusted_proxies: self.settings.http.trusted_proxies.clone(),
            keys,
        }));
        let schedule = crate::backup::Schedule::of(&self.settings);
        let sweeper = spawn_side_tasks(limiters.clone(), self.state.clone(), self.control, schedule);
        let docs = self.settings.http.docs.then(Docs::default);
        // HSTS means something only over TLS (browsers ignore it on plain
        // HTTP), and behind a TLS proxy the proxy should set it.
        let headers = Arc::new(SecurityHeaders::new(hsts));
        let answers: ParserAnswers = Arc::new(crate::middleware::parser_answers(&headers));
        let config = FrontConfig {
            max_body_bytes: self.settings.limits.max_body_bytes,
            request_timeout: self.settings.connections.request_timeout,
            max_header_bytes: self.settings.connections.max_header_bytes,
            limiters,
            headers,
            cors: Arc::new(CorsPolicy::new(&self.settings.http.cors_origins)),
            buffers: Arc::new(crate::middleware::buffers::Buffers::new(&self.settings)),
            allowed: Arc::new(api::AllowedMethods::from_operations()),
            events: self.state.auth.events.clone(),
            metrics: metrics.clone(),
        };
        let endpoint = routes(self.state, config, docs);
        let limits = connection_limits(&self.settings, keys);
        let options = serve_options(&self.settings);
        // The redirect listener stops when the main server is told to.
        let (stop_redirect, redirect_stopped) = tokio::sync::oneshot::channel::<()>();
        let redirect = self.redirect.map(|(acceptor, addr)| {
            let stopped = async move {
                let _ = redirect_stopped.await;
            };
            let endpoint = RedirectToHttps::new(self.addr.port(), redirect_hosts);
            let acceptor = GuardedAcceptor::new(acceptor, limits.clone(), answers.clone());
            spawn_redirect(acceptor, addr, endpoint, stopped, options)
        });
        // So does the metrics listener.
        let (stop_metrics, metrics_stopped) = tokio::sync::oneshot::channel::<()>();
        let metrics_task = self.metrics.zip(metrics).map(|((acceptor, addr), metrics)| {
            let stopped = async move {
                let _ = metrics_stopped.await;
            };
            let acceptor = GuardedAcceptor::new(acceptor, metrics_limits(&limits), answers.clone());
            spawn_metrics(acceptor, addr, metrics, stopped, options)
        });
        let (handshake, mut cert_task) = tls.unzip();
        // Should the task that keeps certificates current ever end, renewals
        // would stop without a sound: stop instead, with an error, so the
        // service manager restarts notesd (which serves the cached
        // certificate and carries on).
        let cert_task_ended = AtomicBool::new(false);
        let shutdown = async {
            match cert_task.as_mut() {
                Some(task) => tokio::select! {
                    () = shutdown => {}
                    outcome = task => {
                        tracing::error!(outcome = ?outcome.err(), "the certificate task stopped; shutting down");
                        cert_task_ended.store(true, Ordering::Relaxed);
                    }
                },
                None => shutdown.await,
            }
            drop(stop_redirect);
            drop(stop_metrics);
        };
        let mut result = match handshake {
            None => {
                let acceptor = GuardedAcceptor::new(self.acceptor, limits, answers);
                crate::server::serve(acceptor, endpoint, shutdown, options).await
            }
            Some(handshake) => {
                let acceptor =
                    GuardedAcceptor::new(TlsAcceptor::new(self.acceptor, handshake), limits, answers);
                crate::server::serve(acceptor, endpoint, shutdown, options).await
            }
        };
        if cert_task_ended.load(Ordering::Relaxed) {
            result = result.and(Err(std::io::Error::other("the certificate task stopped")));
        }
        let listeners: Vec<_> = redirect.into_iter().chain(metrics_task).collect();
        stop_side_tasks(cert_task, listeners, sweeper).await;
        tracing::info!("notesd stopped");
        result
    }
}

/// Once the server has stopped: ends the certificate task and the sweeper,
/// and waits for the other listeners. With the sweeper, which held the
/// state, gone (the server and its connection tasks have ended), the
/// database file is closed when this returns.
async fn stop_side_tasks<T>(
    cert_task: Option<tokio::task::JoinHandle<T>>,
    listeners: Vec<tokio::task::JoinHandle<()>>,
    sweeper: tokio::task::JoinHandle<()>,
) {
    if let Some(task) = cert_task {
        task.abort();
    }
    for task in listeners {
        let _ = task.await;
    }
    sweeper.abort();
    let _ = sweeper.await;
}

/// The handshake settings and the task that keeps certificates current.
fn start_tls(
    source: Option<TlsSource>,
    settings: &Settings,
) -> std::io::Result<Option<(Handshake, tokio::task::JoinHandle<()>)>> {
    Ok(match source {
        None => None,
        Some(TlsSource::Files(files)) => {
            let config = crate::tls::server_config(files.clone()).map_err(std::io::Error::other)?;
            let handshake = Handshake {
                config,
                acme_challenge: None,
            };
            Some((handshake, files.watch(settings.tls.tls_reload_interval)))
        }
        Some(TlsSource::Acme(acme)) => Some(acme.start().map_err(std::io::Error::other)?),
    })
}

/// Binds an extra listener (redirect, metrics) at start, so a taken port
/// stops the start rather than a task later.
async fn bind(at: SocketAddr) -> Result<(TcpAcceptor, SocketAddr), StartupError> {
    let listener = tokio::net::TcpListener::bind(at)
        .await
        .map_err(|e| StartupError::Other(format!("cannot listen on {at}: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| StartupError::Other(e.to_string()))?;
    let acceptor = TcpAcceptor::from_tokio(listener).map_err(|e| StartupError::Other(e.to_string()))?;
    Ok((acceptor, bound))
}

/// Connections the metrics listener holds open at most.
const METRICS_MAX_CONNECTIONS: usize = 8;

/// A scraper needs a connection or two: the metrics listener has a small
/// cap of its own, so it cannot add `--max-connections` open files.
fn metrics_limits(api: &ConnectionLimits) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: METRICS_MAX_CONNECTIONS,
        max_per_client: api.max_per_client.min(METRICS_MAX_CONNECTIONS),
        ..api.clone()
    }
}

fn spawn_metrics(
    acceptor: GuardedAcceptor,
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stopped: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> tokio::task::JoinHandle<()> {
    // Two scrapes in flight per HTTP/2 connection at most: with 8
    // connections, 16 answers of the exposition held at once.
    let options = ServeOptions {
        http2_max_streams: 2,
        ..options
    };
    tracing::info!(%addr, "serving metrics");
    if crate::metrics::exposed(addr) {
        tracing::warn!(%addr, "metrics are served beyond loopback, without authentication; keep the port off public networks");
    }
    tokio::spawn(async move {
        let endpoint = crate::metrics::MetricsEndpoint::new(metrics);
        if let Err(e) = crate::server::serve(acceptor, endpoint, stopped, options).await {
            tracing::error!(error = %e, "metrics listener failed");
        }
    })
}

fn spawn_redirect(
    acceptor: GuardedAcceptor,
    addr: SocketAddr,
    endpoint: RedirectToHttps,
    stopped: impl Future<Output = ()> + Send + 'static,
    options: ServeOptions,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(%addr, "redirecting plain HTTP to https");
    tokio::spawn(async move {
        if let Err(e) = crate::server::serve(acceptor, endpoint, stopped, options).await {
            tracing::error!(error = %e, "redirect listener failed");
        }
    })
}

/// The control socket's file, removed when the server stops with it.
struct SocketFile(std::path::PathBuf);

impl Drop for SocketFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// The control socket's server, and the sweeper: every minute, it forgets
/// recovered addresses so an attack from many addresses cannot grow the
/// limiters' maps without bound, and drops signing keys whose tokens have
/// all expired; hourly, it drops sessions nobody can use, stale login
/// counters and audit events past their retention. Aborting the task stops
/// both and removes the socket file.
fn spawn_side_tasks(
    limiters: Arc<Limiters>,
    state: Arc<AppState>,
    control: tokio::net::UnixListener,
    schedule: Option<crate::backup::Schedule>,
) -> tokio::task::JoinHandle<()> {
    let socket = SocketFile(crate::control::socket_path(&state.data_dir));
    let commands = crate::control::serve(control, state.clone());
    let backups = crate::backup::run_schedule(schedule, state.clone());
    tokio::spawn(async move {
        let _socket = socket;
        tokio::join!(commands, sweep(limiters, state), backups);
    })
}

async fn sweep(limiters: Arc<Limiters>, state: Arc<AppState>) {
    {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
        for minute in 0u64.. {
            tick.tick().await;
            limiters.sweep();
            match state
                .auth
                .tokens
                .prune_keys(&state.data_dir, state.auth.clock.now())
            {
                Ok(dropped) => {
                    for kid in dropped {
                        tracing::info!(%kid, "signing key dropped: every token it signed has expired");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not drop expired signing keys"),
            }
            if minute % 60 == 59 {
                if let Err(e) = state.auth.purge_dead_sessions().await {
                    tracing::warn!(error = %e, "could not purge dead sessions");
                }
                if let Err(e) = state.auth.purge_stale_backoff().await {
                    tracing::warn!(error = %e, "could not purge login counters");
                }
                match state.auth.purge_old_events().await {
                    Ok(n) if n > 0 => tracing::info!(removed = n, "purged audit events past their retention"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "could not purge old audit events"),
                }
            }
        }
    }
}

/// The connection caps both listeners share.
fn connection_limits(settings: &Settings, keys: ClientKeys) -> ConnectionLimits {
    ConnectionLimits {
        max_connections: settings.connections.max_connections,
        max_per_client: settings.connections.max_connections_per_client,
        header_timeout: settings.connections.header_timeout,
        max_head_bytes: settings.connections.max_header_bytes.saturating_mul(4),
        connection_buffer_bytes: settings.connections.connection_buffer_bytes,
        client_buffer_bytes: settings.connections.client_buffer_bytes,
        keys,
        trusted_proxies: settings.http.trusted_proxies.clone(),
    }
}

/// The connection settings both listeners share.
fn serve_options(settings: &Settings) -> ServeOptions {
    ServeOptions {
        idle_timeout: settings.connections.idle_timeout,
        write_timeout: settings.connections.write_timeout,
        shutdown_grace: settings.http.shutdown_grace,
        // poem's default is no limit at all; hyper's own would be 200.
        http2_max_streams: settings.connections.http2_max_streams,
        http2_max_header_list: u32::try_from(settings.connections.max_header_bytes).unwrap_or(u32::MAX),
        http2_keepalive_interval: settings.connections.http2_keepalive_interval,
        http2_keepalive_timeout: settings.connections.http2_keepalive_timeout,
    }
}

/// Opens the data directory, the database and the key ring: everything
/// the API and the administration commands work on.
pub fn open_state(settings: &Settings, clock: Clock) -> Result<AppState, StartupError> {
    let dir = &settings.storage.data_dir;
    prepare_data_dir(dir)?;
    let dir_lock = crate::fsutil::lock_dir(dir)
        .map_err(|source| StartupError::DataDir {
            path: dir.display().to_string(),
            source,
        })?
        .ok_or(StorageError::Locked)?;
    // A database with no key ring beside it: a new ring would not open it,
    // so none is made (nor a master key).
    let db_bytes = fs::metadata(dir.join(DB_FILE)).map_or(0, |m| m.len());
    if db_bytes > 0 && crate::auth::keyring::ring_file(dir)? == RingFile::Missing {
        return Err(StartupError::Other(format!(
            "{} holds a database but no {}: put back the key ring that goes with it (a backup has one)",
            dir.display(),
            crate::auth::keyring::KEYRING_FILE
        )));
    }
    let masters = open_master_keys(settings)?;
    let master_key_file = masters.path().to_owned();
    let keyring = KeyRing::load_or_create(dir, &masters)?;
    retire_master_keys(masters, &keyring, settings.storage.backup_dir.as_deref());
    let db: Db = Arc::new(Backend::open(
        &prepare_db_file(dir)?,
        crate::storage::redb::Options {
            cache_bytes: settings.storage.db_cache_mib.saturating_mul(1024 * 1024),
            write_queue: settings.storage.write_queue as usize,
            audit_key: *keyring.audit_key(),
            sealer: Arc::new(crate::seal::Sealer::new(keyring.data_key())),
        },
    )?);
    let recovery_key = crate::seal::mac(keyring.data_key(), &[b"notesd recovery codes"]);
    let keyring = Arc::new(RwLock::new(keyring));

    let now = clock.now();
    // On a blocking thread of the runtime (see `build`): waiting here is
    // allowed.
    let revoked = tokio::runtime::Handle::current()
        .block_on(db.sessions_revoked_since(now - settings.auth.access_token_ttl))?
        .into_iter()
        .map(|sid| (sid, now));
    let revoked = RevokedSessions::new(settings.auth.access_token_ttl, revoked);

    let passwords = Passwords::new(
        settings.hash_cost(),
        settings.hash_pool(),
        settings.auth.min_password_score,
    )
    .map_err(|e| StartupError::Settings(e.to_string()))?;
    let tokens = Tokens::new(
        keyring,
        settings.auth.token_issuer.clone(),
        settings.auth.token_audience.clone(),
        settings.auth.access_token_ttl,
        settings.auth.token_cache_capacity,
    );
    let auth = Auth {
        db: db.clone(),
        passwords,
        tokens,
        revoked,
        limits: SessionLimits {
            idle: settings.auth.session_idle_ttl,
            absolute: settings.auth.session_absolute_ttl,
            reuse_grace: settings.auth.refresh_reuse_grace,
        },
        attempts: Attempts::new(
            BackoffPolicy {
                free_failures: settings.auth.login_free_failures,
                max: settings.auth.login_backoff_max,
            },
            settings.auth.max_login_counters,
        ),
        clock,
        events: Arc::default(),
        audit_retention: settings.auth.audit_retention,
        signup_policy: settings.auth.signup,
        invite_ttl: settings.auth.invite_ttl,
        mfa: MfaPolicy {
            issuer: settings.auth.totp_issuer.trim().to_owned(),
            login_ttl: settings.auth.mfa_login_ttl,
            admins_need_it: settings.auth.admins_need_mfa,
        },
        pending_logins: PendingLogins::new(PendingLimits {
            total: settings.auth.max_pending_mfa_logins as usize,
            per_account: settings.auth.max_pending_mfa_logins_per_account as usize,
            tries: settings.auth.mfa_login_tries,
        }),
        recovery_key,
    };
    Ok(AppState {
        auth,
        db,
        notes: crate::api::notes::NotesConfig::new(settings),
        clients: crate::client::ClientResolver::new(
            settings.http.trusted_proxies.clone(),
            ClientKeys::new(settings.http.ipv6_prefix),
        ),
        data_dir: dir.clone(),
        master_key_file,
        backup_dir: settings.storage.backup_dir.clone(),
        backups: Arc::default(),
        maintenance: Arc::default(),
        dir_lock,
    })
}

/// The master key file, made at the first start (when the data directory
/// holds no sealed key ring yet); refused inside the data directory.
pub fn open_master_keys(settings: &Settings) -> Result<MasterKeys, StartupError> {
    let dir = &settings.storage.data_dir;
    let path = settings
        .storage
        .master_key_path()
        .ok_or(MasterKeyError::NoPlace)?;
    MasterKeys::check_outside(&path, dir)?;
    if let Some(keys) = MasterKeys::load(&path)? {
        return Ok(keys);
    }
    if let RingFile::SealedWith(id) = crate::auth::keyring::ring_file(dir)? {
        return Err(MasterKeyError::Missing {
            path: path.display().to_string(),
            sealed_with: id,
        }
        .into());
    }
    let keys = MasterKeys::create(&path)?;
    tracing::warn!(
        path = %path.display(),
        id = keys.current().id(),
        "created the master key that seals the data at rest; keep a copy apart from the data directory and its backups: without it they cannot be read"
    );
    Ok(keys)
}

/// Drops from the master key file the keys nothing uses any more (after a
/// rotation that did not finish): the key ring is sealed with the current
/// key by now, and so are the scheduled backups once sealed again here.
fn retire_master_keys(mut masters: MasterKeys, keyring: &KeyRing, backups: Option<&Path>) {
    if masters.ids().len() < 2 || keyring.master_key_id() != masters.current().id() {
        return;
    }
    if let Some(dir) = backups {
        let still_used = crate::backup::reseal_all(dir, &masters).and_then(|_| {
            let old = crate::backup::list(dir)?.into_iter().any(|b| {
                crate::backup::sealed_with(&b)
                    .is_some_and(|id| id != masters.current().id() && masters.find(&id).is_some())
            });
            Ok(old)
        });
        match still_used {
            Ok(false) => {}
            Ok(true) => return,
            Err(e) => {
                tracing::warn!(error = %e, "old master keys kept: the scheduled backups could not all be sealed with the current one");
                return;
            }
        }
    }
    let retired = masters.retire_others();
    match masters.save() {
        Ok(()) => tracing::info!(
            retired = retired.join(", "),
            current = masters.current().id(),
            "retired the old master keys: nothing uses them"
        ),
        Err(e) => {
            tracing::warn!(error = %e, "could not drop the retired master keys from their file; they stay there, unused");
        }
    }
}

fn prepare_data_dir(dir: &Path) -> Result<(), StartupError> {
    let err = |source| StartupError::DataDir {
        path: dir.display().to_string(),
        source,
    };
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err)?;
    let mode = fs::metadata(dir).map_err(err)?.permissions().mode();
    if mode & 0o077 != 0 {
        // The files inside are 0600 either way; say so rather than change a
        // directory the operator may have set up on purpose.
        tracing::warn!(dir = %dir.display(), mode = format!("{:o}", mode & 0o777), "data directory is accessible to other users; 0700 is recommended");
    }
    Ok(())
}

/// Makes sure the database file exists with mode 0600 before redb opens it.
fn prepare_db_file(dir: &Path) -> Result<std::path::PathBuf, StartupError> {
    let path = dir.join(DB_FILE);
    let err = |source| StartupError::DataDir {
        path: path.display().to_string(),
        source,
    };
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(&path)
        .map_err(err)?;
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(path)
}

/// The documentation, rendered when first asked for and then served from
/// shared bytes. Rendering it (the 1.7 MB Swagger UI page with the
/// document inside, and the document) left the process 8 MB larger, which
/// a server whose documentation nobody opens need not carry; and poem's
/// endpoints would copy the page into every answer, memory a client that
/// never reads could pile up.
#[derive(Default)]
struct Docs {
    rendered: tokio::sync::OnceCell<Rendered>,
}

struct Rendered {
    html: Bytes,
    spec: Bytes,
    /// The page's policy: its inline scripts allowed by their hashes.
    csp: poem::http::HeaderValue,
    /// The rest of Swagger UI's routes (the OAuth receiver page).
    ui: Box<dyn poem::endpoint::DynEndpoint<Output = Response>>,
}

impl Rendered {
    fn new() -> Self {
        let service = api::service();
        let ui = service.swagger_ui();
        // The page embeds the document: the served one, not poem-openapi's
        // (which lacks what `spec_json` adds).
        let spec = api::spec_json();
        let html = service.swagger_ui_html().replacen(&service.spec(), &spec, 1);
        Self {
            csp: crate::middleware::headers::docs_csp(&html),
            html: Bytes::from(html),
            spec: Bytes::from(spec),
            ui: Box::new(poem::endpoint::ToDynEndpoint(ui.map_to_response())),
        }
    }
}

impl Docs {
    async fn call(&self, req: Request) -> poem::Result<Response> {
        if req.method() != poem::http::Method::GET && req.method() != poem::http::Method::HEAD {
            let mut resp = crate::error::problem_response(
                &crate::error::Error::Http {
                    status: poem::http::StatusCode::METHOD_NOT_ALLOWED,
                    detail: "The documentation is read with GET.".to_owned(),
                }
                .to_problem(),
            );
            resp.headers_mut().insert(
                poem::http::header::ALLOW,
                poem::http::HeaderValue::from_static("GET, HEAD"),
            );
            return Ok(resp);
        }
        // Concurrent first requests wait for the one rendering.
        let docs = self.rendered.get_or_init(|| async { Rendered::new() }).await;
        let page =
            |bytes: &Bytes, content_type| Response::builder().content_type(content_type).body(bytes.clone());
        let mut answer = match req.uri().path() {
            "/openapi.json" => page(&docs.spec, "application/json"),
            "/docs" | "/docs/" => page(&docs.html, "text/html; charset=utf-8"),
            _ => {
                let mut req = req;
                let rest = req.uri().path().trim_start_matches("/docs").to_owned();
                if let Ok(uri) = rest.parse() {
                    *req.uri_mut() = uri;
                }
                docs.ui.call(req).await?
            }
        };
        answer
            .headers_mut()
            .insert(poem::http::header::CONTENT_SECURITY_POLICY, docs.csp.clone());
        Ok(answer)
    }
}

fn routes(state: Arc<AppState>, config: FrontConfig, docs: Option<Docs>) -> App {
    App {
        dispatch: Dispatch {
            docs,
            api: api::service().into_endpoint(),
            state,
        },
        config,
    }
}

/// The whole server behind the connection layer: [`front`] around the
/// dispatch. One endpoint rather than poem's `around` and `data` layers:
/// each of those is an `async fn` holding its own copy of the request in
/// its future, and hyper moves the whole future of every request.
struct App {
    dispatch: Dispatch,
    config: FrontConfig,
}

impl Endpoint for App {
    type Output = Response;

    fn call(&self, req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        front(&self.dispatch, req, &self.config)
    }
}

/// Gives the request the shared state, then sends `/docs…` and
/// `/openapi.json` to the documentation and everything else straight to
/// the API service, whose own router answers 404 and 405. A general router
/// nesting the API under `/` rewrote every request's path for nothing.
struct Dispatch {
    docs: Option<Docs>,
    api: poem::endpoint::BoxEndpoint<'static>,
    state: Arc<AppState>,
}

impl Endpoint for Dispatch {
    type Output = Response;

    /// Either way one boxed future, with no `async fn` layer (and its copy
    /// of the request) between it and the caller.
    fn call(&self, mut req: Request) -> impl Future<Output = poem::Result<Response>> + Send {
        req.extensions_mut().insert(self.state.clone());
        let path = req.uri().path();
        let for_docs = path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/");
        match &self.docs {
            Some(docs) if for_docs => Box::pin(docs.call(req)),
            _ => poem::endpoint::DynEndpoint::call(&*self.api, req),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of what `call` returns, from its type alone.
    fn returned_size<A, F>(_: impl FnOnce(A, Request) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// Hyper moves each request's whole future into place, every byte of
    /// it however little is in use: nested `async fn` layers, each with its
    /// own copy of the request, had made it 21 KiB, and copying it was the
    /// largest single cost of a note read after the kernel's.
    #[test]
    fn a_request_future_stays_small() {
        let size = returned_size(|app: &'static App, req| app.call(req));
        assert!(size <= 4096, "a request's future takes {size} bytes");
    }
}
