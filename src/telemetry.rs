//! Logging setup: human-readable text or one JSON object per line, level
//! from `NOTESD_LOG` (an `EnvFilter` directive, default `info`).

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

pub fn init(format: LogFormat) {
    init_at(format, "info");
}

/// As [`init`], with `default` as the level when `NOTESD_LOG` is unset.
pub fn init_at(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_env("NOTESD_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    // A line that cannot be written (the log's disk is full) is dropped:
    // the subscriber's own report of it would go through `eprintln!`, which
    // panics when stderr fails, and take down whatever thread logged.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .log_internal_errors(false);
    // `try_init`: a second call (tests start several servers) is harmless.
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
}
