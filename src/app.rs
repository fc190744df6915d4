//! Builds the server from settings: opens the data directory, assembles the
//! routes and serves them on an already-bound listener until shutdown.
//! `notesd serve` and the integration tests both go through
//! [`Application::build`], so tests exercise exactly what ships.

use std::convert::Infallible;
use std::fs;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use poem::listener::{Acceptor, TcpAcceptor};
use poem::{Endpoint, EndpointExt, IntoEndpoint, IntoResponse, Request, Response, Route, Server};

use crate::api::{self, AppState};
use crate::auth::Auth;
use crate::auth::backoff::BackoffPolicy;
use crate::auth::keyring::{KeyRing, KeyringError};
use crate::auth::password::Passwords;
use crate::auth::sessions::{RevokedSessions, SessionLimits};
use crate::auth::tokens::Tokens;
use crate::clock::Clock;
use crate::db::Db;
use crate::listener::{ConnectionLimits, GuardedAcceptor};
use crate::middleware::cors::CorsPolicy;
use crate::middleware::headers::SecurityHeaders;
use crate::middleware::rate_limit::{Limiters, RateLimitConfig};
use crate::middleware::{FrontConfig, front};
use crate::redirect::RedirectToHttps;
use crate::settings::{Settings, TlsMode};
use crate::store::{Store, StoreError};
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
    Store(#[from] StoreError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("{0}")]
    Other(String),
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
        let tls = match settings.tls {
            TlsMode::Off => None,
            TlsMode::Files => {
                let (Some(cert), Some(key)) = (&settings.tls_cert, &settings.tls_key) else {
                    return Err(StartupError::Settings(
                        "--tls files needs --tls-cert and --tls-key".into(),
                    ));
                };
                Some(TlsSource::Files(Arc::new(
                    CertFiles::load(cert, key).map_err(StartupError::Tls)?,
                )))
            }
            TlsMode::Acme => Some(TlsSource::Acme(
                Acme::prepare(&settings).map_err(StartupError::Tls)?,
            )),
        };
        let redirect = match settings.http_redirect_listen {
            Some(at) => {
                let listener = tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|e| StartupError::Other(format!("cannot listen on {at}: {e}")))?;
                let bound = listener
                    .local_addr()
                    .map_err(|e| StartupError::Other(e.to_string()))?;
                let acceptor =
                    TcpAcceptor::from_tokio(listener).map_err(|e| StartupError::Other(e.to_string()))?;
                Some((acceptor, bound))
            }
            None => None,
        };
        Ok(Self {
            acceptor,
            addr,
            settings,
            state,
            tls,
            redirect,
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
        let hsts = self
            .tls
            .is_some()
            .then_some((self.settings.hsts_max_age, self.settings.hsts_include_subdomains));
        // First what can fail, so a failure leaves nothing running.
        let tls = start_tls(self.tls, &self.settings)?;
        tracing::info!(addr = %self.addr, scheme, "notesd listening");
        let limiters = Arc::new(Limiters::new(&RateLimitConfig {
            per_minute: self.settings.rate_limit,
            auth_per_minute: self.settings.auth_rate_limit,
            trusted_proxies: self.settings.trusted_proxies.clone(),
        }));
        // Forget recovered addresses every minute so an attack from many
        // addresses cannot grow the limiters' maps without bound.
        // Hourly, drop sessions nobody can use and stale login counters.
        let sweeper = {
            let limiters = limiters.clone();
            let state = self.state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
                for minute in 0u64.. {
                    tick.tick().await;
                    limiters.sweep();
                    if minute % 60 == 59 {
                        if let Err(e) = state.auth.purge_dead_sessions().await {
                            tracing::warn!(error = %e, "could not purge dead sessions");
                        }
                        if let Err(e) = state.auth.purge_stale_backoff().await {
                            tracing::warn!(error = %e, "could not purge login counters");
                        }
                    }
                }
            })
        };
        let docs_html = if self.settings.docs {
            Some(swagger_page().await)
        } else {
            None
        };
        let config = FrontConfig {
            max_body_bytes: self.settings.max_body_bytes,
            request_timeout: self.settings.request_timeout,
            max_header_bytes: self.settings.max_header_bytes,
            limiters,
            // HSTS means something only over TLS (browsers ignore it on
            // plain HTTP), and behind a TLS proxy the proxy should set it.
            headers: Arc::new(SecurityHeaders::new(docs_html.as_deref(), hsts)),
            cors: Arc::new(CorsPolicy::new(&self.settings.cors_origins)),
        };
        let endpoint = routes(&self.settings, self.state, config);
        let limits = ConnectionLimits {
            max_connections: self.settings.max_connections,
            header_timeout: self.settings.header_timeout,
            max_head_bytes: self.settings.max_header_bytes.saturating_mul(4),
        };
        // The redirect listener stops when the main server is told to.
        let (stop_redirect, redirect_stopped) = tokio::sync::oneshot::channel::<()>();
        let redirect = self.redirect.map(|(acceptor, addr)| {
            let stopped = async move {
                let _ = redirect_stopped.await;
            };
            spawn_redirect(acceptor, addr, self.addr.port(), limits, &self.settings, stopped)
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
        };
        let mut result = match handshake {
            None => {
                let acceptor = GuardedAcceptor::new(self.acceptor, limits);
                serve(acceptor, endpoint, shutdown, &self.settings).await
            }
            Some(handshake) => {
                let acceptor = GuardedAcceptor::new(TlsAcceptor::new(self.acceptor, handshake), limits);
                serve(acceptor, endpoint, shutdown, &self.settings).await
            }
        };
        if let Some(task) = cert_task {
            task.abort();
        }
        if cert_task_ended.load(Ordering::Relaxed) {
            result = result.and(Err(std::io::Error::other("the certificate task stopped")));
        }
        if let Some(task) = redirect {
            let _ = task.await;
        }
        sweeper.abort();
        // The routes (and the state they hold) are dropped with the server;
        // the database file is closed when the last connection task that
        // still holds them ends. redb is crash-safe if the process exits
        // first, so nothing acknowledged can be lost either way.
        tracing::info!("notesd stopped");
        result
    }
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
            Some((handshake, files.watch(settings.tls_reload_interval)))
        }
        Some(TlsSource::Acme(acme)) => Some(acme.start().map_err(std::io::Error::other)?),
    })
}

fn spawn_redirect(
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    https_port: u16,
    limits: ConnectionLimits,
    settings: &Settings,
    stopped: impl Future<Output = ()> + Send + 'static,
) -> tokio::task::JoinHandle<()> {
    tracing::info!(%addr, "redirecting plain HTTP to https");
    let server = configured(
        Server::new_with_acceptor(GuardedAcceptor::new(acceptor, limits)),
        settings,
    )
    .name("notesd-redirect");
    let grace = Some(settings.shutdown_grace);
    let hosts = (settings.tls == TlsMode::Acme).then(|| settings.acme_domains());
    tokio::spawn(async move {
        let endpoint = RedirectToHttps::new(https_port, hosts);
        if let Err(e) = server.run_with_graceful_shutdown(endpoint, stopped, grace).await {
            tracing::error!(error = %e, "redirect listener failed");
        }
    })
}

/// The connection settings both listeners share.
fn configured<A: Acceptor + 'static>(
    server: Server<Infallible, A>,
    settings: &Settings,
) -> Server<Infallible, A> {
    server
        .idle_timeout(settings.idle_timeout)
        // poem's default is no limit at all; hyper's own would be 200.
        .http2_max_concurrent_streams(settings.http2_max_streams)
        .http2_max_header_list_size(u32::try_from(settings.max_header_bytes).unwrap_or(u32::MAX))
}

async fn serve<A: Acceptor + 'static>(
    acceptor: A,
    endpoint: impl Endpoint + 'static,
    shutdown: impl Future<Output = ()> + Send,
    settings: &Settings,
) -> std::io::Result<()> {
    configured(Server::new_with_acceptor(acceptor), settings)
        .name("notesd")
        .run_with_graceful_shutdown(endpoint, shutdown, Some(settings.shutdown_grace))
        .await
}

fn open_state(settings: &Settings, clock: Clock) -> Result<AppState, StartupError> {
    let dir = &settings.data_dir;
    prepare_data_dir(dir)?;
    let store = Store::open_with_cache(
        &prepare_db_file(dir)?,
        settings.db_cache_mib.saturating_mul(1024 * 1024),
    )?;
    let keyring = Arc::new(RwLock::new(KeyRing::load_or_create(dir)?));

    let now = clock.now();
    let revoked = store
        .sessions_revoked_since(now - settings.access_token_ttl)?
        .into_iter()
        .map(|sid| (sid, now));
    let revoked = RevokedSessions::new(settings.access_token_ttl, revoked);

    let passwords = Passwords::new(
        settings.hash_cost(),
        settings.hash_pool(),
        settings.min_password_score,
    )
    .map_err(|e| StartupError::Settings(e.to_string()))?;
    let tokens = Tokens::new(
        keyring,
        settings.token_issuer.clone(),
        settings.token_audience.clone(),
        settings.access_token_ttl,
        settings.token_cache_capacity,
    );
    let db = Db::new(store);
    let auth = Auth {
        db: db.clone(),
        passwords,
        tokens,
        revoked,
        limits: SessionLimits {
            idle: settings.session_idle_ttl,
            absolute: settings.session_absolute_ttl,
        },
        backoff: BackoffPolicy {
            free_failures: settings.login_free_failures,
            max: settings.login_backoff_max,
        },
        clock,
    };
    Ok(AppState {
        auth,
        db,
        search_scan_limit: settings.search_scan_limit,
    })
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

/// The Swagger UI page as it will be served, to hash its inline scripts.
async fn swagger_page() -> String {
    let ui = api::service().swagger_ui();
    let resp = ui.get_response(Request::builder().uri_str("/").finish()).await;
    resp.into_body().into_string().await.unwrap_or_default()
}

fn routes(
    settings: &Settings,
    state: Arc<AppState>,
    config: FrontConfig,
) -> impl Endpoint<Output = Response> + 'static {
    let service = api::service();
    let docs = settings.docs.then(|| {
        Route::new()
            .at("/openapi.json", service.spec_endpoint())
            .nest("/docs", service.swagger_ui())
    });
    Dispatch {
        docs,
        api: service.into_endpoint(),
    }
    .around(move |ep, req| front(ep, req, config.clone()))
    .data(state)
}

/// Sends `/docs…` and `/openapi.json` to the documentation and everything
/// else straight to the API service, whose own router answers 404 and 405.
/// A general router nesting the API under `/` rewrote every request's path
/// for nothing.
struct Dispatch<D, A> {
    docs: Option<D>,
    api: A,
}

impl<D: Endpoint, A: Endpoint> Endpoint for Dispatch<D, A> {
    type Output = Response;

    async fn call(&self, req: Request) -> poem::Result<Response> {
        let path = req.uri().path();
        let for_docs = path == "/openapi.json" || path == "/docs" || path.starts_with("/docs/");
        match &self.docs {
            Some(docs) if for_docs => docs.call(req).await.map(IntoResponse::into_response),
            _ => self.api.call(req).await.map(IntoResponse::into_response),
        }
    }
}
