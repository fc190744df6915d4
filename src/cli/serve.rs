//! `notesd serve`: binds the configured address and serves until SIGINT or
//! SIGTERM; SIGHUP re-reads the `--tls files` certificate.

use tokio::signal::unix::{SignalKind, signal};

use crate::app::Application;
use crate::settings::Settings;

pub async fn run(settings: Settings) -> Result<(), Box<dyn std::error::Error>> {
    // Register the handlers before anything else: a signal that arrives
    // while the server starts must still mean "shut down gracefully", not
    // the default "die at once".
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    // Unhandled, SIGHUP would kill the server.
    let mut hangup = signal(SignalKind::hangup())?;
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.http.listen))?;
    let app = Application::build(settings, listener).await?;
    let cert_files = app.cert_files();
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let Some(files) = cert_files.clone() else {
                tracing::info!("SIGHUP received; no certificate files to reload");
                continue;
            };
            tracing::info!("SIGHUP received, reloading the TLS certificate");
            let _ = tokio::task::spawn_blocking(move || files.reload()).await;
        }
    });
    app.run_until(async move {
        tokio::select! {
            _ = interrupt.recv() => tracing::info!("SIGINT received, shutting down"),
            _ = terminate.recv() => tracing::info!("SIGTERM received, shutting down"),
        }
    })
    .await?;
    Ok(())
}
