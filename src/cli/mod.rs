//! The command line: one clap enum, one module per subcommand.

pub mod openapi;
pub mod serve;

use clap::{CommandFactory, Parser, Subcommand};

use crate::settings::Settings;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "notesd", version, about = "A secure notes REST API in one executable")]
pub struct Cli {
    /// Log output: human-readable text or JSON lines.
    #[arg(
        long,
        global = true,
        env = "NOTESD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<Settings>),
    /// Print the OpenAPI document (JSON) to standard output.
    Openapi,
}

/// `NOTESD_*` variables that no flag reads: most likely typos, which would
/// otherwise silently leave a default (perhaps a weaker one) in force.
pub fn unknown_env_vars() -> Vec<String> {
    let mut known = vec!["NOTESD_LOG".to_owned()];
    let mut stack = vec![Cli::command()];
    while let Some(cmd) = stack.pop() {
        known.extend(
            cmd.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned()),
        );
        stack.extend(cmd.get_subcommands().cloned());
    }
    std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with("NOTESD_") && !known.contains(k))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
