//! The administration commands (`notesd user|invite|keys|audit ...`) and
//! how they reach the data: through the running server's control socket,
//! or on the database directly when no server runs. Both ways run the same
//! [`execute`] against an [`AppState`], so a command means the same thing
//! either way, and a change made through the socket reaches the server's
//! memory (revoked sessions, the key ring) at once.
//!
//! The socket is `control.sock` in the data directory: a Unix domain
//! socket (not an HTTP port), mode 0600 inside the 0700 directory, and the
//! server answers only a peer whose user id owns the data directory. One
//! request per connection: a JSON line in, a JSON line out.

use std::fmt::Write as _;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::api::AppState;
use crate::audit::{Actor, AuditEvent, AuditKind, AuditVerdict};
use crate::domain::{Email, Password, Role};
use crate::error::Error;
use crate::storage::Storage;

pub const SOCKET_FILE: &str = "control.sock";
/// Largest request read from the socket.
const MAX_REQUEST: u64 = 64 * 1024;
/// A peer that has not sent its request, or not read its answer, by then
/// is dropped.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// An administration command.
#[derive(Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum Request {
    UserCreate {
        email: String,
        password: String,
        admin: bool,
    },
    UserList {
        prefix: Option<String>,
    },
    UserSetRole {
        email: String,
        role: String,
    },
    UserDisable {
        email: String,
    },
    UserEnable {
        email: String,
    },
    UserResetPassword {
        email: String,
        password: String,
    },
    UserDelete {
        email: String,
    },
    InviteCreate {
        expires: Option<String>,
    },
    KeysList,
    KeysRotate,
    AuditVerify,
    /// A backup into this new directory (an absolute path).
    Backup {
        path: PathBuf,
    },
    MasterKeyStatus,
    MasterKeyRotate,
}

/// Never shows a password.
impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Request::UserCreate { .. } => "user create",
            Request::UserList { .. } => "user list",
            Request::UserSetRole { .. } => "user set-role",
            Request::UserDisable { .. } => "user disable",
            Request::UserEnable { .. } => "user enable",
            Request::UserResetPassword { .. } => "user reset-password",
            Request::UserDelete { .. } => "user delete",
            Request::InviteCreate { .. } => "invite create",
            Request::KeysList => "keys list",
            Request::KeysRotate => "keys rotate",
            Request::AuditVerify => "audit verify",
            Request::Backup { .. } => "backup",
            Request::MasterKeyStatus => "master-key status",
            Request::MasterKeyRotate => "master-key rotate",
        };
        f.write_str(name)
    }
}

/// A line the server may send before its answer: how far a long command
/// (a backup) has got.
#[derive(Debug, Serialize, Deserialize)]
pub struct ProgressLine {
    pub done: u64,
    pub total: u64,
}

/// Where [`execute`] reports a long command's progress, when a peer waits.
pub type ProgressSink = tokio::sync::mpsc::Sender<ProgressLine>;

/// A command's answer: what to print, and whether it succeeded.
#[derive(Debug, Serialize, Deserialize)]
pub struct Reply {
    pub ok: bool,
    pub text: String,
}

impl Reply {
    pub fn ok(text: String) -> Self {
        Self { ok: true, text }
    }

    fn failed(text: String) -> Self {
        Self { ok: false, text }
    }
}

/// The message of an error, for the operator (who may see details a
/// client would not).
fn message(err: &Error) -> String {
    match err {
        Error::Validation(errors) => errors
            .iter()
            .map(|e| format!("{}: {}", e.field, e.message))
            .collect::<Vec<_>>()
            .join("; "),
        Error::NotFound => "no such account".to_owned(),
        Error::Conflict(detail) => (*detail).to_owned(),
        Error::Internal(detail) => format!("internal error: {detail}"),
        other => other.to_string(),
    }
}

/// Why a command failed, as the operator reads it.
struct Failure(String);

impl<E: Into<Error>> From<E> for Failure {
    fn from(err: E) -> Self {
        Failure(message(&err.into()))
    }
}

/// Runs a command against the server's state (or one opened for it:
/// `local`, in the command's own process, where a long command may draw
/// its progress on the terminal).
pub async fn execute(state: &AppState, request: Request, local: bool, sink: Option<ProgressSink>) -> Reply {
    match run(state, request, local, sink).await {
        Ok(text) => Reply::ok(text),
        Err(Failure(text)) => Reply::failed(text),
    }
}

async fn run(
    state: &AppState,
    request: Request,
    local: bool,
    sink: Option<ProgressSink>,
) -> Result<String, Failure> {
    let auth = &state.auth;
    let actor = Actor::Operator;
    match request {
        Request::InviteCreate { expires } => {
            let ttl = match expires.as_deref() {
                Some(raw) => Some(crate::api::admin::parse_invite_ttl(raw)?),
                None => None,
            };
            let issued = auth.create_invite(actor, ttl).await?;
            Ok(format!(
                "{}\n(one use, until {}; shown only now)",
                issued.code,
                rfc3339(issued.invite.expires_at)
            ))
        }
        Request::KeysList | Request::KeysRotate => keys(state, &request).await,
        Request::Backup { path } => {
            // Held by the copy itself: a peer that goes away ends this
            // future, not the copy, which must not meet a rotation.
            let maintenance = state.maintenance.clone().lock_owned().await;
            let source = crate::backup::Source::of(state).map_err(Failure)?;
            tokio::task::spawn_blocking(move || {
                let _maintenance = maintenance;
                // A peer that reads slowly misses lines, never stalls it.
                let mut send = |done, total| {
                    if let Some(sink) = &sink {
                        let _ = sink.try_send(ProgressLine { done, total });
                    }
                };
                let report = crate::backup::Report {
                    interactive: local,
                    peer: Some(&mut send),
                };
                crate::backup::create(&source, &path, report)
            })
            .await
            .map_err(|e| Failure(e.to_string()))?
            .map_err(Failure)
        }
        Request::MasterKeyStatus => master_key_status(state),
        Request::MasterKeyRotate => master_key_rotate(state).await,
        Request::AuditVerify => match state.db.verify_audit().await? {
            AuditVerdict::Intact { records, first, last } => {
                Ok(format!("audit log intact: {records} records ({first}..={last})"))
            }
            AuditVerdict::Broken { seq, reason } => {
                Err(Failure(format!("audit log broken at record {seq}: {reason}")))
            }
        },
        user => users(state, user).await,
    }
}

/// `notesd user ...`.
async fn users(state: &AppState, request: Request) -> Result<String, Failure> {
    let auth = &state.auth;
    let actor = Actor::Operator;
    match request {
        Request::UserCreate {
            email,
            password,
            admin,
        } => {
            let email = Email::parse(&email)?;
            let password = Password::parse(password)?;
            let role = if admin { Role::Admin } else { Role::User };
            let user = auth.create_user(actor, email, password, role).await?;
            Ok(format!("created {} {} ({})", user.id, user.email, role.as_str()))
        }
        Request::UserList { prefix } => {
            let prefix = prefix
                .as_deref()
                .map(crate::domain::fold_email)
                .unwrap_or_default();
            let mut out = String::new();
            let mut after = None;
            loop {
                let (users, next) = state.db.users_page(prefix.clone(), after, 500).await?;
                for user in users {
                    let status = if user.disabled { "disabled" } else { "enabled" };
                    let _ = writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}",
                        user.id,
                        user.email,
                        user.role.as_str(),
                        status,
                        user.created_at.date()
                    );
                }
                match next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
            Ok(out.trim_end().to_owned())
        }
        Request::UserSetRole { email, role } => {
            let role =
                Role::parse(&role).ok_or_else(|| Failure("the role is `user` or `admin`".to_owned()))?;
            let user = auth.user_by_email(&email).await?;
            auth.set_role(actor, user.id, role).await?;
            Ok(format!("{} is now {}", user.email, role.as_str()))
        }
        Request::UserDisable { email } => {
            let user = auth.user_by_email(&email).await?;
            let ended = auth.set_disabled(actor, user.id, true).await?;
            Ok(format!("disabled {}; {ended} sessions ended", user.email))
        }
        Request::UserEnable { email } => {
            let user = auth.user_by_email(&email).await?;
            auth.set_disabled(actor, user.id, false).await?;
            Ok(format!("enabled {}", user.email))
        }
        Request::UserResetPassword { email, password } => {
            let user = auth.user_by_email(&email).await?;
            let password = Password::parse(password)?;
            let ended = auth.reset_password(actor, user.id, password).await?;
            Ok(format!(
                "password of {} reset; {ended} sessions ended",
                user.email
            ))
        }
        Request::UserDelete { email } => {
            let user = auth.user_by_email(&email).await?;
            auth.delete_user(actor, user.id).await?;
            Ok(format!("deleted {} and everything it held", user.email))
        }
        _ => Err(Failure("not an account command".to_owned())),
    }
}

/// `notesd keys ...`.
async fn keys(state: &AppState, request: &Request) -> Result<String, Failure> {
    let auth = &state.auth;
    let actor = Actor::Operator;
    match request {
        Request::KeysList => {
            let keys = auth
                .tokens
                .public_keys(auth.clock.now())
                .map_err(Error::internal)?;
            let last = keys.len().saturating_sub(1);
            Ok(keys
                .iter()
                .enumerate()
                .map(|(i, (kid, _, created))| {
                    let role = if i == last { "signing" } else { "verifying" };
                    format!("{kid}\t{role}\tcreated {}", rfc3339(*created))
                })
                .collect::<Vec<_>>()
                .join("\n"))
        }
        Request::KeysRotate => {
            let now = auth.clock.now();
            let kid = auth
                .tokens
                .rotate_key(&state.data_dir, now)
                .map_err(Error::internal)?;
            let event = AuditEvent::new(AuditKind::KeyRotated, now)
                .actor(actor)
                .detail(format!("new signing key {kid}"));
            state.db.append_audit(event.clone()).await?;
            event.emit();
            Ok(format!(
                "new signing key {kid}; the old keys verify until their tokens expire"
            ))
        }
        _ => Err(Failure("not a key command".to_owned())),
    }
}

/// `notesd master-key status`.
fn master_key_status(state: &AppState) -> Result<String, Failure> {
    let masters = crate::masterkey::MasterKeys::load(&state.master_key_file)
        .map_err(|e| Failure(e.to_string()))?
        .ok_or_else(|| Failure(format!("no master key at {}", state.master_key_file.display())))?;
    let sealing = state
        .auth
        .tokens
        .with_ring(|ring| ring.master_key_id().to_owned())
        .map_err(Failure)?;
    let mut out = format!(
        "master key file {}\ncurrent key {}\nkey ring sealed with {sealing}",
        masters.path().display(),
        masters.current().id()
    );
    let old: Vec<&str> = masters.ids().into_iter().skip(1).collect();
    if old.is_empty() {
        out.push_str("\nno old key in the file");
    } else {
        let _ = write!(out, "\nold keys not yet retired: {}", old.join(", "));
    }
    if let Some(dir) = &state.backup_dir {
        let backups = crate::backup::list(dir).map_err(Failure)?;
        let current = backups
            .iter()
            .filter(|b| crate::backup::sealed_with(b).as_deref() == Some(masters.current().id()))
            .count();
        let _ = write!(
            out,
            "\nscheduled backups in {}: {} ({current} sealed with the current key)",
            dir.display(),
            backups.len()
        );
    }
    Ok(out)
}

/// `notesd master-key rotate`: a new key first in the file, the key ring
/// (and the scheduled backups' rings) sealed with it, then the old keys,
/// which nothing uses any more, dropped from the file. Each step is a
/// whole-file replacement; a crash between two leaves the old key in the
/// file, and the next start finishes the work.
async fn master_key_rotate(state: &AppState) -> Result<String, Failure> {
    let _maintenance = state.maintenance.lock().await;
    let path = state.master_key_file.clone();
    let mut masters = crate::masterkey::MasterKeys::load(&path)
        .map_err(|e| Failure(e.to_string()))?
        .ok_or_else(|| Failure(format!("no master key at {}", path.display())))?;
    let new = masters
        .add_new()
        .map_err(|e| Failure(e.to_string()))?
        .id()
        .to_owned();
    masters.save().map_err(|e| Failure(e.to_string()))?;
    let current = masters.current();
    state
        .auth
        .tokens
        .with_ring_mut(|ring| {
            let before = ring.master_key_id().to_owned();
            ring.seal_with(current);
            let saved = ring.save(&state.data_dir);
            if saved.is_err() {
                // Left sealed with the key on disk.
                if let Some(old) = masters.find(&before) {
                    ring.seal_with(old);
                }
            }
            saved
        })
        .map_err(Failure)?
        .map_err(|e| Failure(format!("the key ring could not be sealed with the new key: {e}")))?;
    let resealed = match &state.backup_dir {
        Some(dir) => crate::backup::reseal_all(dir, &masters).map_err(Failure)?,
        None => 0,
    };
    let retired = masters.retire_others();
    masters.save().map_err(|e| Failure(e.to_string()))?;
    let event = AuditEvent::new(AuditKind::KeyRotated, state.auth.clock.now())
        .actor(Actor::Operator)
        .detail(format!("new master key {new}"));
    state.db.append_audit(event.clone()).await?;
    event.emit();
    Ok(format!(
        "new master key {new}: the key ring and {resealed} scheduled backups are sealed with it; retired {}. A backup kept elsewhere still needs the retired key.",
        retired.join(", ")
    ))
}

fn rfc3339(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

/// The control socket of a data directory.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}

/// Binds the control socket (replacing one a dead server left), mode 0600.
pub fn bind(data_dir: &Path) -> std::io::Result<UnixListener> {
    let path = socket_path(data_dir);
    match std::fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Connections answered at once; more are closed at once (only the data
/// directory's owner can connect, but not even they may pile up
/// descriptors).
const MAX_CONNECTIONS: usize = 16;

/// Answers commands until the task is dropped. Only a peer running as the
/// data directory's owner is answered.
pub async fn serve(listener: UnixListener, state: Arc<AppState>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, say: wait rather than spin.
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("control socket busy: a connection was closed unanswered");
            continue;
        };
        let state = state.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(e) = answer(stream, &state).await {
                tracing::warn!(error = %e, "control socket request failed");
            }
        });
    }
}

async fn answer(stream: UnixStream, state: &AppState) -> std::io::Result<()> {
    let owner = std::fs::metadata(&state.data_dir)?.uid();
    let peer = stream.peer_cred()?.uid();
    if peer != owner {
        tracing::warn!(
            peer_uid = peer,
            "control socket peer is not the data directory's owner; refused"
        );
        return Ok(());
    }
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    let mut reader = BufReader::new(read.take(MAX_REQUEST));
    tokio::time::timeout(READ_TIMEOUT, reader.read_line(&mut line))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no request"))??;
    let reply = match serde_json::from_str::<Request>(&line) {
        Ok(request) => {
            tracing::info!(command = ?request, "control command");
            let (sink, mut progress) = tokio::sync::mpsc::channel(16);
            let mut running = std::pin::pin!(execute(state, request, false, Some(sink)));
            loop {
                tokio::select! {
                    reply = &mut running => break reply,
                    Some(line) = progress.recv() => send_line(&mut write, &line).await?,
                }
            }
        }
        Err(_) => Reply::failed("not a command this server understands".to_owned()),
    };
    send_line(&mut write, &reply).await?;
    // A peer that does not read its answer frees its slot all the same.
    tokio::time::timeout(READ_TIMEOUT, write.shutdown())
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the answer was not read"))?
}

/// Writes one JSON line to the peer, which has [`READ_TIMEOUT`] to take it.
async fn send_line(
    write: &mut tokio::net::unix::OwnedWriteHalf,
    value: &impl Serialize,
) -> std::io::Result<()> {
    let mut out = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    out.push(b'\n');
    tokio::time::timeout(READ_TIMEOUT, write.write_all(&out))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "the answer was not read"))?
}

/// Sends a command to a running server; `None` if no server answers on
/// the socket (none runs, or it died and left the file).
pub async fn call(data_dir: &Path, request: &Request) -> std::io::Result<Option<Reply>> {
    let stream = match UnixStream::connect(socket_path(data_dir)).await {
        Ok(stream) => stream,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let (read, mut write) = stream.into_split();
    let mut line = serde_json::to_vec(request).map_err(std::io::Error::other)?;
    line.push(b'\n');
    write.write_all(&line).await?;
    let mut reader = BufReader::new(read);
    let mut bar: Option<crate::progress::Progress> = None;
    loop {
        let mut answer = String::new();
        reader.read_line(&mut answer).await?;
        if answer.is_empty() {
            return Err(std::io::Error::other(
                "the server closed the control socket without answering (is it run by another user?)",
            ));
        }
        if let Ok(line) = serde_json::from_str::<ProgressLine>(&answer) {
            bar.get_or_insert_with(|| crate::progress::Progress::new("backup", line.total.max(1), true))
                .at(line.done);
            continue;
        }
        if let Some(bar) = bar {
            bar.finish();
        }
        return serde_json::from_str(&answer)
            .map(Some)
            .map_err(std::io::Error::other);
    }
}
