//! notesd: a secure notes REST API in one executable.
//!
//! The binary (`src/main.rs`) only parses the command line and dispatches;
//! everything else lives here so that the integration tests build exactly
//! what `notesd serve` builds. Layers point one way:
//! `cli` → `app` → `api` → `auth` / `domain` → `store`.

pub mod api;
pub mod app;
pub mod audit;
pub mod auth;
pub mod backup;
pub mod cli;
pub mod client;
pub mod clock;
pub mod control;
pub mod domain;
pub mod error;
pub mod fsutil;
pub mod listener;
pub mod masterkey;
pub mod metrics;
pub mod middleware;
pub mod pool;
pub mod progress;
pub mod redirect;
pub mod seal;
pub mod server;
pub mod settings;
pub mod storage;
pub mod telemetry;
pub mod tls;

pub use app::Application;
pub use clock::Clock;
pub use settings::Settings;
