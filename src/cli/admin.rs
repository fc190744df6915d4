//! `notesd user|invite|keys|audit ...`: administration from the server's
//! own machine. Each command goes to the running server through its
//! control socket, or, when no server runs, straight to the database; the
//! syntax and the effect are the same (see [`crate::control`]).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::clock::Clock;
use crate::control::{self, Reply, Request};
use crate::settings::Settings;

/// Which server's data a command works on.
#[derive(Debug, Clone, Args)]
pub struct Target {
    /// The server's TOML settings file (its data directory and password
    /// hashing settings are used).
    #[arg(long, env = "NOTESD_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// The server's data directory (default: as `notesd serve`).
    #[arg(long, env = "NOTESD_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}

/// How a command gets a password: never from the command line.
#[derive(Debug, Clone, Args)]
pub struct PasswordInput {
    /// Read the password from the first line of standard input instead of
    /// asking for it on the terminal.
    #[arg(long)]
    pub password_stdin: bool,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create an account (`--admin` for an admin: how the first admin of
    /// a fresh install is made, before or after the first start).
    Create {
        #[arg(long)]
        email: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        password: PasswordInput,
        #[command(flatten)]
        target: Target,
    },
    /// List accounts: id, email, role, status, creation date.
    List {
        /// Only emails that start with this.
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        target: Target,
    },
    /// Set an account's role (`user` or `admin`); the last enabled admin
    /// cannot be demoted.
    SetRole {
        #[arg(long)]
        email: String,
        #[arg(long, value_parser = ["user", "admin"])]
        role: String,
        #[command(flatten)]
        target: Target,
    },
    /// Disable an account: every session ends, login is refused.
    Disable {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        target: Target,
    },
    /// Enable a disabled account.
    Enable {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        target: Target,
    },
    /// Set a new password; every session of the account ends.
    ResetPassword {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        password: PasswordInput,
        #[command(flatten)]
        target: Target,
    },
    /// Delete an account with its notes and sessions.
    Delete {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum InviteCommand {
    /// Make a one-time signup code (for `--signup invite`).
    Create {
        /// How long it stays valid, e.g. `7d` (default: `--invite-ttl`).
        #[arg(long)]
        expires: Option<String>,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// The token signing keys: the one that signs, and the older ones
    /// that still verify.
    List {
        #[command(flatten)]
        target: Target,
    },
    /// Make a new signing key, used at once; the old ones keep verifying
    /// until every token they signed has expired, then drop out.
    Rotate {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the stored audit log's MAC chain; report the first broken
    /// link.
    Verify {
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Debug, Subcommand)]
pub enum MasterKeyCommand {
    /// The master key file, the key that seals the key ring, old keys not
    /// yet retired, and what the scheduled backups are sealed with.
    Status {
        #[command(flatten)]
        target: Target,
    },
    /// Make a new master key, seal the key ring (and the scheduled
    /// backups' rings) with it, then retire the old one.
    Rotate {
        #[command(flatten)]
        target: Target,
    },
}

/// The request a command line makes, and the server it is for.
pub enum Command {
    User(UserCommand),
    Invite(InviteCommand),
    Keys(KeysCommand),
    Audit(AuditCommand),
    MasterKey(MasterKeyCommand),
    Backup { path: PathBuf, target: Target },
}

fn request_of(command: Command) -> Result<(Request, Target), String> {
    Ok(match command {
        Command::User(user) => match user {
            UserCommand::Create {
                email,
                admin,
                password,
                target,
            } => {
                let password = read_password(&password)?;
                (
                    Request::UserCreate {
                        email,
                        password,
                        admin,
                    },
                    target,
                )
            }
            UserCommand::List { prefix, target } => (Request::UserList { prefix }, target),
            UserCommand::SetRole { email, role, target } => (Request::UserSetRole { email, role }, target),
            UserCommand::Disable { email, target } => (Request::UserDisable { email }, target),
            UserCommand::Enable { email, target } => (Request::UserEnable { email }, target),
            UserCommand::ResetPassword {
                email,
                password,
                target,
            } => {
                let password = read_password(&password)?;
                (Request::UserResetPassword { email, password }, target)
            }
            UserCommand::Delete { email, target } => (Request::UserDelete { email }, target),
        },
        Command::Invite(InviteCommand::Create { expires, target }) => {
            (Request::InviteCreate { expires }, target)
        }
        Command::Keys(KeysCommand::List { target }) => (Request::KeysList, target),
        Command::Keys(KeysCommand::Rotate { target }) => (Request::KeysRotate, target),
        Command::Audit(AuditCommand::Verify { target }) => (Request::AuditVerify, target),
        Command::MasterKey(MasterKeyCommand::Status { target }) => (Request::MasterKeyStatus, target),
        Command::MasterKey(MasterKeyCommand::Rotate { target }) => (Request::MasterKeyRotate, target),
        Command::Backup { path, target } => {
            // The server resolves it from its own working directory.
            let path = std::path::absolute(&path).map_err(|e| format!("{}: {e}", path.display()))?;
            (Request::Backup { path }, target)
        }
    })
}

fn read_password(input: &PasswordInput) -> Result<String, String> {
    if input.password_stdin {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from standard input: {e}"))?;
        return Ok(line.trim_end_matches(['\r', '\n']).to_owned());
    }
    if !std::io::stdin().is_terminal() {
        return Err("no terminal to ask for the password on: pass it with --password-stdin".to_owned());
    }
    let first = rpassword::prompt_password("Password: ").map_err(|e| e.to_string())?;
    let again = rpassword::prompt_password("Again: ").map_err(|e| e.to_string())?;
    if first != again {
        return Err("the two passwords differ".to_owned());
    }
    Ok(first)
}

/// The settings `notesd serve` would run with for this target: its file,
/// the `NOTESD_*` environment and the defaults, with `--data-dir` on top.
fn settings_of(target: &Target) -> Result<Settings, String> {
    let mut args = vec!["notesd".into(), "serve".into()];
    if let Some(config) = &target.config {
        args.push("--config".into());
        args.push(config.clone().into_os_string());
    }
    if let Some(dir) = &target.data_dir {
        args.push("--data-dir".into());
        args.push(dir.clone().into_os_string());
    }
    let loaded = super::config::load(args).map_err(|e| e.to_string())?;
    match loaded.cli.command {
        super::Command::Serve(args) => Ok(args.settings),
        _ => Err("the settings could not be read".to_owned()),
    }
}

/// `notesd restore`: on the files, never through a server (none may run).
pub fn restore(path: &std::path::Path, force: bool, target: &Target) -> ExitCode {
    let result = settings_of(target).and_then(|settings| {
        let interactive = std::io::stderr().is_terminal();
        crate::backup::restore(path, &settings, force, interactive)
    });
    print_outcome(result.map(Reply::ok))
}

/// Runs an administration command; prints its answer (stdout) or its
/// error (one line on stderr, exit status 1).
pub fn run(command: Command) -> ExitCode {
    print_outcome(outcome(command))
}

fn print_outcome(outcome: Result<Reply, String>) -> ExitCode {
    match outcome {
        Ok(reply) if reply.ok => {
            if !reply.text.is_empty() {
                println!("{}", reply.text);
            }
            ExitCode::SUCCESS
        }
        Ok(reply) => {
            eprintln!("notesd: {}", reply.text);
            ExitCode::FAILURE
        }
        Err(message) => {
            eprintln!("notesd: {message}");
            ExitCode::FAILURE
        }
    }
}

fn outcome(command: Command) -> Result<Reply, String> {
    let (request, target) = request_of(command)?;
    let settings = settings_of(&target)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async move {
        let dir = settings.storage.data_dir.clone();
        match control::call(&dir, &request).await {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(e) => return Err(format!("the control socket in {} failed: {e}", dir.display())),
        }
        // No server: work on the database itself.
        let state = tokio::task::spawn_blocking(move || crate::app::open_state(&settings, Clock::default()))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| match e {
                crate::app::StartupError::Store(crate::storage::StorageError::Locked) => format!(
                    "the database in {} is open in another process, and no server answers on its control socket",
                    dir.display()
                ),
                other => other.to_string(),
            })?;
        let reply = control::execute(&state, request, true, None).await;
        drop(state);
        Ok(reply)
    })
}
