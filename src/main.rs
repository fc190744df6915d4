//! The `notesd` binary: parse the command line, start logging, dispatch.

use std::process::ExitCode;

use clap::Parser;
use notesd::cli::{self, Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    notesd::telemetry::init(cli.log_format);
    for name in cli::unknown_env_vars() {
        tracing::warn!(variable = %name, "unknown NOTESD_ environment variable ignored");
    }
    match cli.command {
        Command::Openapi => {
            cli::openapi::run();
            ExitCode::SUCCESS
        }
        Command::Serve(settings) => {
            let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("notesd: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(cli::serve::run(*settings)) {
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
