//! The command line: one clap enum, one module per subcommand.

pub mod admin;
pub mod config;
pub mod openapi;
pub mod serve;

use clap::{Args, CommandFactory, Parser, Subcommand};

use crate::settings::Settings;
use crate::telemetry::LogFormat;

#[derive(Debug, Parser)]
#[command(name = "notesd", version, about = "A secure notes REST API in one executable")]
pub struct Cli {
    #[command(flatten)]
    pub log: LogSettings,

    #[command(subcommand)]
    pub command: Command,
}

/// Logging; the level comes from `NOTESD_LOG` (e.g. `debug`, `notesd=debug`).
#[derive(Debug, Args)]
#[group(id = "log")]
pub struct LogSettings {
    /// Log output: human-readable text or JSON lines.
    #[arg(
        long,
        global = true,
        env = "NOTESD_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server.
    Serve(Box<ServeArgs>),
    /// Check the settings and print the effective ones, with where each
    /// came from (flag, environment, file or default); secrets redacted.
    CheckConfig {
        /// Print a commented example configuration file instead.
        #[arg(long)]
        example: bool,
        #[command(flatten)]
        args: Box<ServeArgs>,
    },
    /// Print the OpenAPI document (JSON) to standard output.
    Openapi,
    /// Manage accounts, through the running server or, when none runs,
    /// on its database.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Make signup invites.
    #[command(subcommand)]
    Invite(admin::InviteCommand),
    /// List or rotate the token signing keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Check the stored audit log.
    #[command(subcommand)]
    Audit(admin::AuditCommand),
    /// Show or rotate the master key that seals the data at rest.
    #[command(subcommand)]
    MasterKey(admin::MasterKeyCommand),
    /// Write a consistent backup of the database and key ring into a new
    /// directory, while the server serves (or not).
    Backup {
        /// The directory to create.
        path: std::path::PathBuf,
        #[command(flatten)]
        target: admin::Target,
    },
    /// Restore a backup into a stopped server's data directory, after
    /// checking it with the master key.
    Restore {
        /// A directory `notesd backup` wrote.
        path: std::path::PathBuf,
        /// Replace a data directory that holds data (its files are kept
        /// aside in `replaced-<time>/`).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        target: admin::Target,
    },
}

/// The settings of `notesd serve`, and the file they may come from.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TOML file of settings (see `notesd check-config --example`); flags
    /// and NOTESD_* variables win over it.
    #[arg(long, env = "NOTESD_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    #[command(flatten)]
    pub settings: Settings,
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
