//! `notesd backup PATH` and `notesd restore PATH`.
//!
//! A backup is a directory: `notesd.redb`, a copy of the database as one
//! read transaction saw it (writes go on meanwhile); `keyring.json`, the
//! sealed key ring; and `manifest.json`, with the counts of that snapshot,
//! the key ids and a SHA-256 of each file. It is written under a temporary
//! name, checked (redb's integrity check, the counts, every account and a
//! sample of notes opened with the key ring), fsynced and renamed into
//! place: a backup that exists is whole. Values stay sealed, so a backup is
//! as safe as the data directory, and, like it, useless without the master
//! key.
//!
//! A restore goes into a stopped server's data directory: the backup is
//! copied beside it and checked the same way (with the master key the
//! server uses), and only then renamed into place; the files it replaces
//! are kept aside in `replaced-<time>/`, and a directory that holds data is
//! refused without `--force`.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::api::AppState;
use crate::app::DB_FILE;
use crate::auth::keyring::{KEYRING_FILE, KeyRing, RingFile};
use crate::progress::Progress;
use crate::settings::Settings;
use crate::storage::RecordCounts;
use crate::storage::redb::{Options, RedbStorage};

pub const MANIFEST_FILE: &str = "manifest.json";
const FORMAT: &str = "notesd-backup-1";
/// Notes opened to check a copy, beyond every account.
const SAMPLE_NOTES: usize = 1000;

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub created_at: String,
    pub notesd_version: String,
    pub schema_version: u64,
    /// Of the snapshot the copy holds.
    pub counts: RecordCounts,
    /// The master key that seals `keyring.json`: needed to restore.
    pub master_key: String,
    /// The token signing keys in the ring (PASERK ids).
    pub signing_keys: Vec<String>,
    pub files: Vec<FileDigest>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FileDigest {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

fn io_err(what: &str, path: &Path) -> impl Fn(std::io::Error) -> String {
    let shown = format!("{what} {}", path.display());
    move |e| format!("{shown}: {e}")
}

/// SHA-256 and size of a file.
fn digest(path: &Path) -> Result<FileDigest, String> {
    let err = io_err("cannot read", path);
    let mut file = fs::File::open(path).map_err(&err)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut bytes = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(&err)?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        bytes += n as u64;
    }
    Ok(FileDigest {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        bytes,
        sha256: crate::seal::hex(&hasher.finalize()),
    })
}

fn sync_file(path: &Path) -> Result<(), String> {
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io_err("cannot sync", path))
}

fn private_dir(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(io_err("cannot create", path))
}

fn now_rfc3339() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| now.to_string())
}

/// The store options that open a copy with `ring`.
fn options_for(ring: &KeyRing) -> Options {
    Options {
        cache_bytes: crate::storage::redb::DEFAULT_CACHE_BYTES,
        ..Options::for_ring(ring)
    }
}

/// What a backup copies, taken from the serving (or just opened) state.
pub struct Source {
    pub db: crate::storage::Db,
    pub data_dir: PathBuf,
    /// Opens the copy with the key ring.
    pub options: Options,
    pub signing_keys: Vec<String>,
}

impl Source {
    pub fn of(state: &AppState) -> Result<Self, String> {
        Ok(Self {
            db: state.db.clone(),
            data_dir: state.data_dir.clone(),
            options: state.auth.tokens.with_ring(options_for)?,
            signing_keys: state
                .auth
                .tokens
                .public_keys(state.auth.clock.now())?
                .into_iter()
                .map(|(kid, _, _)| kid)
                .collect(),
        })
    }
}

/// Where a backup's progress goes: a bar on this process's terminal (when
/// it runs in the command's own process), and/or a peer of the control
/// socket, which draws it on its own.
pub struct Report<'a> {
    pub interactive: bool,
    pub peer: Option<&'a mut (dyn FnMut(u64, u64) + Send)>,
}

/// Writes a backup of `source` to `to`, which must not exist. Blocking.
/// Returns the summary line.
pub fn create(source: &Source, to: &Path, report: Report<'_>) -> Result<String, String> {
    if to.exists() {
        return Err(format!("{} exists already; name a new directory", to.display()));
    }
    let name = to
        .file_name()
        .ok_or_else(|| format!("{} names no directory", to.display()))?
        .to_string_lossy()
        .into_owned();
    let parent = to
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut nonce = [0u8; 6];
    getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
    let partial = parent.join(format!(".{name}.partial-{}", crate::seal::hex(&nonce)));
    let _ = fs::remove_dir_all(&partial);
    private_dir(&partial)?;
    let made = write_into(source, &partial, report);
    match made {
        Ok(summary) => {
            fs::rename(&partial, to).map_err(io_err("cannot rename the backup to", to))?;
            sync_file(parent)?;
            Ok(summary)
        }
        Err(e) => {
            let _ = fs::remove_dir_all(&partial);
            Err(e)
        }
    }
}

fn write_into(source: &Source, dir: &Path, report: Report<'_>) -> Result<String, String> {
    let started = std::time::Instant::now();
    let db_path = dir.join(DB_FILE);
    let mut progress: Option<Progress> = None;
    let Report {
        interactive,
        mut peer,
    } = report;
    let (counts, rows) = source
        .db
        .snapshot_into(&db_path, &mut |done, total| {
            progress
                .get_or_insert_with(|| Progress::new("backup", total.max(1), interactive))
                .at(done);
            if let Some(peer) = peer.as_mut() {
                peer(done, total);
            }
        })
        .map_err(|e| format!("the copy failed: {e}"))?;
    if let Some(progress) = progress {
        progress.finish();
    }
    // The key ring as it is now; signing keys added since the snapshot do
    // no harm, and the data key never changes.
    let ring_path = source.data_dir.join(KEYRING_FILE);
    let ring_bytes = fs::read(&ring_path).map_err(io_err("cannot read", &ring_path))?;
    crate::fsutil::write_private(dir, KEYRING_FILE, &ring_bytes).map_err(io_err("cannot write", dir))?;
    let RingFile::SealedWith(master_key) = crate::auth::keyring::ring_file(dir).map_err(|e| e.to_string())?
    else {
        return Err("the key ring is not sealed".to_owned());
    };
    let checked = RedbStorage::verify_copy(&db_path, source.options.clone(), SAMPLE_NOTES)
        .map_err(|e| format!("the copy does not check: {e}"))?;
    if checked != counts {
        return Err(format!("the copy holds {checked:?}, the snapshot {counts:?}"));
    }
    sync_file(&db_path)?;
    let manifest = Manifest {
        format: FORMAT.to_owned(),
        created_at: now_rfc3339(),
        notesd_version: env!("CARGO_PKG_VERSION").to_owned(),
        schema_version: crate::storage::redb::SCHEMA_VERSION,
        counts,
        master_key,
        signing_keys: source.signing_keys.clone(),
        files: vec![digest(&db_path)?, digest(&dir.join(KEYRING_FILE))?],
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    crate::fsutil::write_private(dir, MANIFEST_FILE, &json).map_err(io_err("cannot write", dir))?;
    Ok(format!(
        "backup of {} accounts, {} notes, {} sessions, {} audit records ({rows} rows, {} bytes) in {:.1} s; sealed with master key {}",
        counts.users,
        counts.notes,
        counts.sessions,
        counts.audit_records,
        manifest.files[0].bytes,
        started.elapsed().as_secs_f64(),
        manifest.master_key
    ))
}

/// Restores the backup `from` into the data directory of `settings`, which
/// no server may be using. Blocking. Returns the summary.
pub fn restore(from: &Path, settings: &Settings, force: bool, interactive: bool) -> Result<String, String> {
    let started = std::time::Instant::now();
    let target = &settings.storage.data_dir;
    if std::os::unix::net::UnixStream::connect(crate::control::socket_path(target)).is_ok() {
        return Err(format!(
            "a server is running on {}; stop it first",
            target.display()
        ));
    }
    let manifest_path = from.join(MANIFEST_FILE);
    let manifest: Manifest =
        serde_json::from_slice(&fs::read(&manifest_path).map_err(io_err("cannot read", &manifest_path))?)
            .map_err(|e| format!("{} is not a backup manifest: {e}", manifest_path.display()))?;
    if manifest.format != FORMAT {
        return Err(format!("unknown backup format {:?}", manifest.format));
    }
    if manifest.schema_version > crate::storage::redb::SCHEMA_VERSION {
        return Err(format!(
            "the backup has schema version {}, newer than this notesd understands; upgrade notesd",
            manifest.schema_version
        ));
    }
    let masters = match settings.storage.master_key_path() {
        Some(path) => crate::masterkey::MasterKeys::load(&path)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| {
                format!(
                    "no master key at {}; the backup is sealed with master key {}",
                    path.display(),
                    manifest.master_key
                )
            })?,
        None => return Err(crate::masterkey::MasterKeyError::NoPlace.to_string()),
    };
    let created = !target.exists();
    if created {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(target)
            .map_err(io_err("cannot create", target))?;
    }
    let restored = restore_into(from, target, &manifest, &masters, force, interactive);
    if restored.is_err() && created {
        // Refused: the directory made for it goes too.
        let _ = fs::remove_dir_all(target);
    }
    let summary = restored?;
    Ok(format!("{summary} ({:.1} s)", started.elapsed().as_secs_f64()))
}

fn restore_into(
    from: &Path,
    target: &Path,
    manifest: &Manifest,
    masters: &crate::masterkey::MasterKeys,
    force: bool,
    interactive: bool,
) -> Result<String, String> {
    crate::masterkey::MasterKeys::check_outside(masters.path(), target).map_err(|e| e.to_string())?;
    // No server or command may open the directory meanwhile.
    let _lock = crate::fsutil::lock_dir(target)
        .map_err(io_err("cannot lock", target))?
        .ok_or_else(|| format!("{} is in use by another process; stop it first", target.display()))?;
    let held: Vec<&str> = [DB_FILE, KEYRING_FILE]
        .into_iter()
        .filter(|name| target.join(name).exists())
        .collect();
    if !held.is_empty() && !force {
        return Err(format!(
            "{} holds data ({}); pass --force to replace it (the files replaced are kept aside)",
            target.display(),
            held.join(", ")
        ));
    }

    let staging = target.join(format!(".restore-{}", std::process::id()));
    let _ = fs::remove_dir_all(&staging);
    private_dir(&staging)?;
    let staged = stage(from, &staging, manifest, masters, interactive);
    if let Err(e) = staged {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let aside = if held.is_empty() {
        None
    } else {
        let stamp = time::OffsetDateTime::now_utc().unix_timestamp();
        let aside = target.join(format!("replaced-{stamp}"));
        private_dir(&aside)?;
        for name in &held {
            fs::rename(target.join(name), aside.join(name))
                .map_err(io_err("cannot move aside", &target.join(name)))?;
        }
        Some(aside)
    };
    for name in [DB_FILE, KEYRING_FILE] {
        fs::rename(staging.join(name), target.join(name))
            .map_err(io_err("cannot move into place", &target.join(name)))?;
    }
    let _ = fs::remove_dir_all(&staging);
    sync_file(target)?;
    let mut summary = format!(
        "restored {} accounts, {} notes, {} audit records from the backup of {} into {}",
        manifest.counts.users,
        manifest.counts.notes,
        manifest.counts.audit_records,
        manifest.created_at,
        target.display(),
    );
    if let Some(aside) = aside {
        summary = format!("{summary}; the replaced files are in {}", aside.display());
    }
    Ok(summary)
}

/// Copies the backup's files into `staging`, checking each against the
/// manifest, then opens and checks the copy with the master key.
fn stage(
    from: &Path,
    staging: &Path,
    manifest: &Manifest,
    masters: &crate::masterkey::MasterKeys,
    interactive: bool,
) -> Result<(), String> {
    let total: u64 = manifest.files.iter().map(|f| f.bytes).sum();
    let mut progress = Progress::new("restore", total.max(1), interactive);
    let mut done = 0;
    for name in [DB_FILE, KEYRING_FILE] {
        let expected = manifest
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or_else(|| format!("the manifest does not list {name}"))?;
        let (source, copy) = (from.join(name), staging.join(name));
        copy_file(&source, &copy, &mut |n| progress.at(done + n))?;
        done += expected.bytes;
        let found = digest(&copy)?;
        if found.sha256 != expected.sha256 || found.bytes != expected.bytes {
            return Err(format!(
                "{} does not match the manifest: the backup is damaged",
                source.display()
            ));
        }
    }
    progress.finish();
    // Only a ring sealed with a master key we hold: a plain one would let
    // whoever wrote the backup choose the signing and data keys.
    if !matches!(
        crate::auth::keyring::ring_file(staging).map_err(|e| e.to_string())?,
        RingFile::SealedWith(_)
    ) {
        return Err("the backup's key ring is not sealed with a master key: refused".to_owned());
    }
    let ring =
        KeyRing::load_or_create(staging, masters).map_err(|e| format!("the backup's key ring: {e}"))?;
    let counts = RedbStorage::verify_copy(&staging.join(DB_FILE), options_for(&ring), SAMPLE_NOTES)
        .map_err(|e| format!("the backup does not check: {e}"))?;
    if counts != manifest.counts {
        return Err(format!(
            "the backup holds {counts:?}, its manifest says {:?}",
            manifest.counts
        ));
    }
    Ok(())
}

fn copy_file(from: &Path, to: &PathBuf, progress: &mut dyn FnMut(u64)) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut source = fs::File::open(from).map_err(io_err("cannot read", from))?;
    let mut copy = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(io_err("cannot create", to))?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut copied = 0;
    loop {
        let n = source.read(&mut buffer).map_err(io_err("cannot read", from))?;
        if n == 0 {
            break;
        }
        copy.write_all(&buffer[..n]).map_err(io_err("cannot write", to))?;
        copied += n as u64;
        progress(copied);
    }
    copy.sync_all().map_err(io_err("cannot sync", to))
}

/// Seals the key ring of every backup in `dir` that an older key of
/// `masters` sealed with the current key (after a master key rotation), so
/// that they need only it; returns how many were sealed again. Backups
/// sealed with a key `masters` does not hold (made elsewhere) are left
/// alone.
pub fn reseal_all(dir: &Path, masters: &crate::masterkey::MasterKeys) -> Result<usize, String> {
    let mut resealed = 0;
    for backup in list(dir)? {
        let manifest_path = backup.join(MANIFEST_FILE);
        let mut manifest: Manifest =
            serde_json::from_slice(&fs::read(&manifest_path).map_err(io_err("cannot read", &manifest_path))?)
                .map_err(|e| format!("{}: {e}", manifest_path.display()))?;
        if manifest.master_key == masters.current().id() {
            continue;
        }
        if masters.find(&manifest.master_key).is_none() {
            tracing::warn!(backup = %backup.display(), master_key = %manifest.master_key, "a backup sealed with a master key this server does not hold; left as it is");
            continue;
        }
        KeyRing::load_or_create(&backup, masters).map_err(|e| format!("{}: {e}", backup.display()))?;
        let ring = digest(&backup.join(KEYRING_FILE))?;
        manifest.files.retain(|f| f.name != KEYRING_FILE);
        manifest.files.push(ring);
        masters.current().id().clone_into(&mut manifest.master_key);
        let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
        crate::fsutil::write_private(&backup, MANIFEST_FILE, &json)
            .map_err(io_err("cannot write", &backup))?;
        resealed += 1;
    }
    Ok(resealed)
}

/// The backups in `dir` (directories holding a manifest), oldest first by
/// name (scheduled backups are named by time).
pub fn list(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut found = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(format!("cannot list {}: {e}", dir.display())),
    };
    for entry in entries {
        let path = entry.map_err(io_err("cannot list", dir))?.path();
        if path.join(MANIFEST_FILE).is_file() {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// The master key a backup's manifest names.
pub fn sealed_with(backup: &Path) -> Option<String> {
    let manifest: Manifest = serde_json::from_slice(&fs::read(backup.join(MANIFEST_FILE)).ok()?).ok()?;
    Some(manifest.master_key)
}

/// Scheduled backups: `--backup-dir`, `--backup-every`, `--backup-keep`.
pub struct Schedule {
    pub dir: PathBuf,
    pub every: std::time::Duration,
    pub keep: usize,
}

impl Schedule {
    /// The schedule the settings ask for, if any.
    pub fn of(settings: &Settings) -> Option<Self> {
        let storage = &settings.storage;
        storage.backup_dir.clone().map(|dir| Self {
            dir,
            every: storage.backup_every,
            keep: storage.backup_keep as usize,
        })
    }
}

/// Name prefix of scheduled backups; only these are pruned.
const SCHEDULED: &str = "notesd-";

/// Makes a backup every `schedule.every` (the first one `every` after the
/// start) and keeps the newest `keep`; a failure is logged and counted in
/// the metrics, and the schedule goes on. Without a schedule, never ends
/// and does nothing.
pub async fn run_schedule(schedule: Option<Schedule>, state: Arc<AppState>) {
    let Some(schedule) = schedule else {
        return std::future::pending().await;
    };
    let mut tick = tokio::time::interval(schedule.every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let counts = &state.backups;
        let result = scheduled_backup(&schedule, &state).await;
        match result {
            Ok(summary) => {
                counts.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                counts.last_success.store(
                    time::OffsetDateTime::now_utc().unix_timestamp(),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tracing::info!(%summary, "scheduled backup made");
            }
            Err(error) => {
                counts.failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::error!(%error, dir = %schedule.dir.display(), "scheduled backup failed");
            }
        }
    }
}

async fn scheduled_backup(schedule: &Schedule, state: &AppState) -> Result<String, String> {
    fs::DirBuilder::new()
        .recursive(true)
        .create(&schedule.dir)
        .map_err(io_err("cannot create", &schedule.dir))?;
    let now = time::OffsetDateTime::now_utc();
    let name = format!(
        "{SCHEDULED}{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    );
    let to = schedule.dir.join(name);
    let maintenance = state.maintenance.clone().lock_owned().await;
    let source = Source::of(state)?;
    let report = Report {
        interactive: false,
        peer: None,
    };
    let summary = tokio::task::spawn_blocking(move || {
        let _maintenance = maintenance;
        create(&source, &to, report)
    })
    .await
    .map_err(|e| e.to_string())??;
    let scheduled: Vec<PathBuf> = list(&schedule.dir)?
        .into_iter()
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(SCHEDULED))
        })
        .collect();
    for old in scheduled
        .iter()
        .take(scheduled.len().saturating_sub(schedule.keep))
    {
        match fs::remove_dir_all(old) {
            Ok(()) => tracing::info!(backup = %old.display(), "old scheduled backup removed"),
            Err(e) => {
                tracing::warn!(backup = %old.display(), error = %e, "could not remove an old scheduled backup");
            }
        }
    }
    Ok(summary)
}
