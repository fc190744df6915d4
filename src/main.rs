//! The `notesd` binary: parse the command line (and the configuration file
//! it names), start logging, dispatch.

use std::process::ExitCode;

use notesd::cli::config::{self, ConfigError};
use notesd::cli::{self, Command};

fn main() -> ExitCode {
    let loaded = match config::load(std::env::args_os().collect()) {
        Ok(loaded) => loaded,
        // Help, version and usage errors print as clap prints them.
        Err(ConfigError::Clap(e)) => e.exit(),
        Err(e) => {
            eprintln!("notesd: {e}");
            return ExitCode::from(2);
        }
    };
    // An administration command prints its answer; its log says only
    // what went wrong (`NOTESD_LOG=info` for the rest).
    let quiet = matches!(
        loaded.cli.command,
        Command::User(_)
            | Command::Invite(_)
            | Command::Keys(_)
            | Command::Audit(_)
            | Command::MasterKey(_)
            | Command::Backup { .. }
            | Command::Restore { .. }
    );
    notesd::telemetry::init_at(loaded.cli.log.log_format, if quiet { "warn" } else { "info" });
    for name in cli::unknown_env_vars() {
        tracing::warn!(variable = %name, "unknown NOTESD_ environment variable ignored");
    }
    if let Some(file) = &loaded.file {
        if config::loosely_permitted(file) {
            tracing::warn!(file = %file.display(), "configuration file is writable by other users");
        }
        tracing::info!(file = %file.display(), "configuration file read");
    }
    let shown = loaded.settings_subcommand().map(|name| loaded.effective(name));
    match loaded.cli.command {
        Command::User(command) => cli::admin::run(cli::admin::Command::User(command)),
        Command::Invite(command) => cli::admin::run(cli::admin::Command::Invite(command)),
        Command::Keys(command) => cli::admin::run(cli::admin::Command::Keys(command)),
        Command::Audit(command) => cli::admin::run(cli::admin::Command::Audit(command)),
        Command::MasterKey(command) => cli::admin::run(cli::admin::Command::MasterKey(command)),
        Command::Backup { path, target } => cli::admin::run(cli::admin::Command::Backup { path, target }),
        Command::Restore { path, force, target } => cli::admin::restore(&path, force, &target),
        Command::Openapi => {
            cli::openapi::run();
            ExitCode::SUCCESS
        }
        Command::CheckConfig { example: true, .. } => {
            print!("{}", config::example());
            ExitCode::SUCCESS
        }
        Command::CheckConfig { args, .. } => {
            print!("{}", shown.unwrap_or_default());
            match notesd::app::check_start(&args.settings) {
                Ok(()) => {
                    println!("\n# The settings are valid, and the files they name can be read.");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("notesd: {e}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Serve(args) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("notesd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cli::serve::run(args.settings)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = %e, "notesd failed");
                    eprintln!("notesd: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
