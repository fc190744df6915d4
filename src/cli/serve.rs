//! `notesd serve`: binds the configured address and serves until SIGINT or
//! SIGTERM.

use tokio::signal::unix::{SignalKind, signal};

use crate::app::Application;
use crate::settings::Settings;

pub async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    // Register the handlers before anything else: a signal that arrives
    // while the server starts must still mean "shut down gracefully", not
    // the default "die at once".
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    let app = Application::build(settings, listener).await?;
    app.run_until(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    })
    .await?;
    Ok(())
}
