//! Builds the server from settings: opens the data directory, assembles the
//! routes and serves them on an already-bound listener until shutdown.
//! `notesd serve` and the integration tests both go through
//! [`Application::build`], so tests exercise exactly what ships.

use std::fs;
use std::future::Future;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, RwLock};

use poem::listener::TcpAcceptor;
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
use crate::settings::Settings;
use crate::store::{Store, StoreError};

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
    #[error("{0}")]
    Other(String),
}

pub struct Application {
    acceptor: TcpAcceptor,
    addr: SocketAddr,
    settings: Settings,
    state: Arc<AppState>,
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
        Ok(Self {
            acceptor,
            addr,
            settings,
            state,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves until `shutdown` completes, then stops accepting, lets requests
    /// in flight finish (up to the configured grace) and closes the database.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send) -> std::io::Result<()> {
        tracing::info!(addr = %self.addr, "notesd listening");
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
            headers: Arc::new(SecurityHeaders::new(docs_html.as_deref(), None)),
            cors: Arc::new(CorsPolicy::new(&self.settings.cors_origins)),
        };
        let endpoint = routes(&self.settings, self.state, config);
        let acceptor = GuardedAcceptor::new(
            self.acceptor,
            ConnectionLimits {
                max_connections: self.settings.max_connections,
                header_timeout: self.settings.header_timeout,
                max_head_bytes: self.settings.max_header_bytes.saturating_mul(4),
            },
        );
        let result = Server::new_with_acceptor(acceptor)
            .name("notesd")
            .idle_timeout(self.settings.idle_timeout)
            .run_with_graceful_shutdown(endpoint, shutdown, Some(self.settings.shutdown_grace))
            .await;
        sweeper.abort();
        // The routes (and the state they hold) are dropped with the server;
        // the database file is closed when the last connection task that
        // still holds them ends. redb is crash-safe if the process exits
        // first, so nothing acknowledged can be lost either way.
        tracing::info!("notesd stopped");
        result
    }
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
