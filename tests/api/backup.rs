//! `notesd backup` while the server serves and writes pour in, `notesd
//! restore` into a fresh directory, and `notesd master-key rotate` under
//! load: the backup holds exactly one instant of the server's data, the
//! restored directory serves it, and a rotation loses nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::at_rest::files_holding;
use crate::helpers::{PASSWORD, TestApp, master_key_file, spawn_app, spawn_app_in, spawn_app_with};

const WRITERS: usize = 4;

/// Runs `notesd <args>` with this process's master key and nothing else of
/// the caller's `NOTESD_*` environment.
async fn notesd(args: Vec<String>, key: &Path) -> Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_notesd"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NOTESD_") {
            command.env_remove(name);
        }
    }
    command.args(args).env("NOTESD_MASTER_KEY_FILE", key);
    tokio::task::spawn_blocking(move || command.output().expect("notesd runs"))
        .await
        .expect("joined")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writers that each create notes one after another until told to stop;
/// each returns the titles acknowledged, in order.
fn start_writers(
    app: &TestApp,
    access: &str,
    stop: &Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<String>>> {
    (0..WRITERS)
        .map(|w| {
            let (client, base, access, stop) = (
                app.client.clone(),
                app.base.clone(),
                access.to_owned(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut acknowledged = Vec::new();
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    let title = format!("w{w}-{i:05}");
                    let resp = client
                        .post(format!("{base}/api/v1/notes"))
                        .bearer_auth(&access)
                        .json(&json!({"title": title, "content": "kestrel", "tags": ["load"]}))
                        .send()
                        .await
                        .expect("write");
                    assert_eq!(resp.status(), StatusCode::CREATED);
                    acknowledged.push(title);
                    i += 1;
                }
                acknowledged
            })
        })
        .collect()
}

/// Every title of the account's notes, through the API.
async fn titles(app: &TestApp, access: &str) -> Vec<String> {
    let mut all = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let query = match &cursor {
            Some(c) => format!("limit=100&cursor={c}"),
            None => "limit=100".to_owned(),
        };
        let page: Value = app.list_notes(access, &query).await.json().await.unwrap();
        for item in page["items"].as_array().unwrap() {
            all.push(item["title"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return all,
        }
    }
}

/// Whether `restored` is what the writers had written at one instant:
/// for each writer, a prefix of its sequence of notes.
fn is_one_instant(restored: &[String], written: &[Vec<String>]) -> bool {
    let mut per_writer: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for title in restored {
        let writer = title.split('-').next().unwrap().to_owned();
        per_writer.entry(writer).or_default().push(title.clone());
    }
    written.iter().enumerate().all(|(w, sequence)| {
        let mut got = per_writer.remove(&format!("w{w}")).unwrap_or_default();
        got.sort();
        // A note committed but not yet acknowledged when the writers
        // stopped is still one the server held.
        got.len() <= sequence.len() + 1 && got.iter().zip(sequence).all(|(a, b)| a == b)
    }) && per_writer.is_empty()
}

#[tokio::test]
async fn a_backup_under_writes_restores_one_instant_and_serves_it() {
    let app = spawn_app().await;
    let user = app.new_user().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&app, &user.access, &stop);
    // Let writes pour in, then back up through the control socket.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let backups = tempfile::tempdir().unwrap();
    let target = backups.path().join("b1");
    let (ok, out, err) = app.cli(&["backup", target.to_str().unwrap()], "").await;
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("backup of "), "{out}");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written = Vec::new();
    for writer in writers {
        written.push(writer.await.unwrap());
    }
    let total: usize = written.iter().map(Vec::len).sum();

    let manifest: Value =
        serde_json::from_slice(&std::fs::read(target.join("manifest.json")).unwrap()).unwrap();
    let in_backup = manifest["counts"]["notes"].as_u64().unwrap();
    assert!(
        in_backup > 0 && in_backup < total as u64,
        "{in_backup} of {total}: taken mid-load"
    );
    for secret in [user.email.as_str(), "kestrel", "k4.secret"] {
        assert!(
            files_holding(&target, secret.as_bytes()).is_empty(),
            "{secret} in the backup"
        );
    }

    // Restore into a fresh directory and serve from it.
    let fresh = tempfile::tempdir().unwrap();
    let data = fresh.path().join("data");
    let out = notesd(
        vec![
            "restore".into(),
            target.display().to_string(),
            "--data-dir".into(),
            data.display().to_string(),
        ],
        &master_key_file(),
    )
    .await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{in_backup} notes")),
        "{}",
        text(&out)
    );
    let restored_dir = tempfile::tempdir().unwrap();
    for name in ["notesd.redb", "keyring.json"] {
        std::fs::rename(data.join(name), restored_dir.path().join(name)).unwrap();
    }
    let restored = spawn_app_in(restored_dir).await;
    let login = restored.login(&user.email, PASSWORD).await;
    assert_eq!(login.status(), StatusCode::OK);
    let token: Value = login.json().await.unwrap();
    let access = token["access_token"].as_str().unwrap();
    let got = titles(&restored, access).await;
    assert_eq!(got.len() as u64, in_backup);
    assert!(
        is_one_instant(&got, &written),
        "the restored notes are not one instant of the server's"
    );
    let tagged: Value = restored
        .list_notes(access, "tag=load&limit=1")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        tagged["items"].as_array().unwrap().len(),
        1,
        "the tag index came along"
    );
}

/// A server with an account and a note, and a backup of it in a fresh
/// directory.
async fn served_and_backed_up() -> (TestApp, tempfile::TempDir, std::path::PathBuf) {
    let app = spawn_app().await;
    let user = app.new_user().await;
    app.create_note(&user.access, &json!({"title": "kept"})).await;
    let backups = tempfile::tempdir().unwrap();
    let good = backups.path().join("good");
    let (ok, out, err) = app.cli(&["backup", good.to_str().unwrap()], "").await;
    assert!(ok, "{out}{err}");
    (app, backups, good)
}

#[tokio::test]
async fn a_restore_checks_the_backup_and_never_overwrites_without_force() {
    let (app, _backups, good) = served_and_backed_up().await;
    let (ok, _, err) = app.cli(&["backup", good.to_str().unwrap()], "").await;
    assert!(
        !ok && err.contains("exists"),
        "never over an existing backup: {err}"
    );

    // Into the running server's directory: refused.
    let restore = |target: &Path, extra: &[&str]| {
        let mut args = vec![
            "restore".to_owned(),
            good.display().to_string(),
            "--data-dir".into(),
            target.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };
    let out = notesd(restore(&app.data_dir, &["--force"]), &master_key_file()).await;
    assert!(
        !out.status.success() && text(&out).contains("running"),
        "{}",
        text(&out)
    );

    // A directory with data: refused without --force, kept aside with it.
    let other = spawn_app().await;
    other.new_user().await;
    let mut other = other;
    other.stop().await;
    let before = std::fs::read(other.data_dir.join("notesd.redb")).unwrap();
    let out = notesd(restore(&other.data_dir, &[]), &master_key_file()).await;
    assert!(
        !out.status.success() && text(&out).contains("--force"),
        "{}",
        text(&out)
    );
    assert_eq!(
        std::fs::read(other.data_dir.join("notesd.redb")).unwrap(),
        before,
        "untouched"
    );
    let out = notesd(restore(&other.data_dir, &["--force"]), &master_key_file()).await;
    assert!(out.status.success(), "{}", text(&out));
    let aside: Vec<_> = std::fs::read_dir(&other.data_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("replaced-"))
        .collect();
    assert_eq!(aside.len(), 1);
    assert_eq!(
        std::fs::read(aside[0].join("notesd.redb")).unwrap(),
        before,
        "the replaced file is kept"
    );
}

#[tokio::test]
async fn a_damaged_foreign_or_planted_backup_is_refused_and_nothing_written() {
    let (_app, backups, good) = served_and_backed_up().await;

    // A damaged backup, or another master key: refused, nothing written.
    let damaged = backups.path().join("damaged");
    copy_dir(&good, &damaged);
    let db = damaged.join("notesd.redb");
    let mut bytes = std::fs::read(&db).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&db, bytes).unwrap();
    let empty = tempfile::tempdir().unwrap();
    let into = empty.path().join("d");
    let args = vec![
        "restore".into(),
        damaged.display().to_string(),
        "--data-dir".into(),
        into.display().to_string(),
    ];
    let out = notesd(args, &master_key_file()).await;
    assert!(
        !out.status.success() && text(&out).contains("damaged"),
        "{}",
        text(&out)
    );
    assert!(!into.join("notesd.redb").exists());
    let wrong = empty.path().join("wrong.key");
    notesd::masterkey::MasterKeys::create(&wrong).unwrap();
    let args = vec![
        "restore".into(),
        good.display().to_string(),
        "--data-dir".into(),
        into.display().to_string(),
    ];
    let out = notesd(args, &wrong).await;
    assert!(
        !out.status.success() && text(&out).contains("master key"),
        "{}",
        text(&out)
    );
    assert!(!into.exists(), "a refused restore leaves no directory behind");

    // A key ring in plain (whoever wrote it chose the keys), with a
    // manifest that matches it: refused.
    let planted = backups.path().join("planted");
    copy_dir(&good, &planted);
    let plain = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/schema-v3.keyring.json"
    );
    std::fs::copy(plain, planted.join("keyring.json")).unwrap();
    let mut manifest: Value =
        serde_json::from_slice(&std::fs::read(planted.join("manifest.json")).unwrap()).unwrap();
    let ring = std::fs::read(planted.join("keyring.json")).unwrap();
    for file in manifest["files"].as_array_mut().unwrap() {
        if file["name"] == "keyring.json" {
            file["bytes"] = json!(ring.len());
            file["sha256"] = json!(hex(&<sha2::Sha256 as sha2::Digest>::digest(&ring)));
        }
    }
    std::fs::write(planted.join("manifest.json"), manifest.to_string()).unwrap();
    let args = vec![
        "restore".into(),
        planted.display().to_string(),
        "--data-dir".into(),
        into.display().to_string(),
    ];
    let out = notesd(args, &master_key_file()).await;
    assert!(
        !out.status.success() && text(&out).contains("not sealed"),
        "{}",
        text(&out)
    );
    assert!(!into.exists());
}

fn hex(bytes: &[u8]) -> String {
    notesd::seal::hex(bytes)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

#[tokio::test]
async fn a_master_key_rotation_under_writes_loses_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("master.key");
    let key_flag = key.to_str().unwrap().to_owned();
    let backups = tempfile::tempdir().unwrap();
    let backup_dir = backups.path().to_str().unwrap().to_owned();
    let mut app = spawn_app_with(&["--master-key-file", &key_flag, "--backup-dir", &backup_dir]).await;
    let user = app.new_user().await;
    let cli = |args: Vec<String>| {
        let mut args = args;
        args.extend(["--data-dir".to_owned(), app.data_dir.display().to_string()]);
        notesd(args, &key)
    };
    let out = cli(vec![
        "backup".into(),
        backups.path().join("before").display().to_string(),
    ])
    .await;
    assert!(out.status.success(), "{}", text(&out));
    // A backup from elsewhere, sealed with a key this server never had:
    // left alone, and no reason to stop.
    let foreign = spawn_app().await;
    let (ok, out, err) = foreign
        .cli(&["backup", backups.path().join("foreign").to_str().unwrap()], "")
        .await;
    assert!(ok, "{out}{err}");
    let old = std::fs::read_to_string(&key).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let writers = start_writers(&app, &user.access, &stop);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let out = cli(vec!["master-key".into(), "rotate".into()]).await;
    assert!(out.status.success(), "{}", text(&out));
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    let mut written: Vec<String> = Vec::new();
    for writer in writers {
        written.extend(writer.await.unwrap());
    }
    let new = std::fs::read_to_string(&key).unwrap();
    assert_ne!(new, old);
    assert_eq!(new.lines().count(), 1, "the old key is retired");
    let status = cli(vec!["master-key".into(), "status".into()]).await;
    assert!(text(&status).contains("no old key"), "{}", text(&status));
    assert!(
        text(&status).contains(": 2 (1 sealed with the current key)"),
        "{}",
        text(&status)
    );

    // Everything acknowledged reads back, after a restart with the new key
    // alone, and the backup made before the rotation restores with it.
    app.stop().await;
    let dir = app.dir.take().unwrap();
    let app = spawn_app_in_with_key(dir, &key_flag).await;
    let login: Value = app.login(&user.email, PASSWORD).await.json().await.unwrap();
    let mut got = titles(&app, login["access_token"].as_str().unwrap()).await;
    got.sort();
    written.sort();
    assert_eq!(got, written);
    let fresh = tempfile::tempdir().unwrap();
    let args = vec![
        "restore".into(),
        backups.path().join("before").display().to_string(),
        "--data-dir".into(),
        fresh.path().join("d").display().to_string(),
    ];
    let out = notesd(args, &key).await;
    assert!(out.status.success(), "{}", text(&out));
}

async fn spawn_app_in_with_key(dir: tempfile::TempDir, key: &str) -> TestApp {
    let data = dir.path().to_str().unwrap().to_owned();
    let mut app = crate::helpers::spawn_app_at(&data, &["--master-key-file", key]).await;
    app.dir = Some(dir);
    app
}

/// The value of a metric line that starts with `name`, if any.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

async fn wait_for_metric(app: &TestApp, name: &str, at_least: f64) -> String {
    let url = format!("{}/metrics", app.metrics.as_deref().unwrap());
    for _ in 0..300 {
        let text = app.client.get(&url).send().await.unwrap().text().await.unwrap();
        if metric(&text, name).is_some_and(|v| v >= at_least) {
            return text;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("{name} never reached {at_least}");
}

#[tokio::test]
async fn scheduled_backups_are_made_pruned_and_their_failures_counted() {
    let backups = tempfile::tempdir().unwrap();
    let dir = backups.path().to_str().unwrap().to_owned();
    let app = spawn_app_with(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--backup-dir",
        &dir,
        "--backup-every",
        "1s",
        "--backup-keep",
        "2",
    ])
    .await;
    app.new_user().await;
    let text = wait_for_metric(&app, "notesd_scheduled_backups_total{result=\"ok\"}", 3.0).await;
    assert!(metric(&text, "notesd_backup_last_success_timestamp_seconds").is_some());
    let kept = notesd_backups(backups.path());
    assert!(
        kept.len() <= 3 && kept.len() >= 2,
        "{kept:?}: the oldest are pruned"
    );
    // A manual backup in the same directory is never pruned.
    let manual = backups.path().join("manual");
    let (ok, out, err) = app.cli(&["backup", manual.to_str().unwrap()], "").await;
    assert!(ok, "{out}{err}");
    wait_for_metric(&app, "notesd_scheduled_backups_total{result=\"ok\"}", 6.0).await;
    assert!(manual.join("manifest.json").exists());

    // A directory that cannot be made: counted and logged, the server
    // serves on.
    let file = tempfile::NamedTempFile::new().unwrap();
    let under_a_file = file.path().join("backups");
    let app = spawn_app_with(&[
        "--metrics-listen",
        "127.0.0.1:0",
        "--backup-dir",
        under_a_file.to_str().unwrap(),
        "--backup-every",
        "1s",
    ])
    .await;
    wait_for_metric(&app, "notesd_scheduled_backups_total{result=\"failed\"}", 1.0).await;
    app.new_user().await;
}

fn notesd_backups(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("notesd-"))
        .collect()
}

#[tokio::test]
async fn a_rotation_cut_short_is_finished_at_the_next_start_without_stranding_a_backup() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("master.key");
    let key_flag = key.to_str().unwrap().to_owned();
    let backups = tempfile::tempdir().unwrap();
    let backup_dir = backups.path().to_str().unwrap().to_owned();
    let flags = [
        "--master-key-file",
        key_flag.as_str(),
        "--backup-dir",
        backup_dir.as_str(),
    ];
    let mut app = spawn_app_with(&flags).await;
    app.new_user().await;
    let scheduled = backups.path().join("notesd-20260101T000000Z");
    let (ok, out, err) = app.cli(&["backup", scheduled.to_str().unwrap()], "").await;
    assert!(ok, "{out}{err}");
    app.stop().await;
    // The rotation's first step only: a new key first in the file, the
    // ring and the backup still sealed with the old one.
    let mut masters = notesd::masterkey::MasterKeys::load(&key).unwrap().unwrap();
    let new = masters.add_new().unwrap().id().to_owned();
    masters.save().unwrap();

    let data = app.data_dir.to_str().unwrap().to_owned();
    let mut again = crate::helpers::spawn_app_at(&data, &flags).await;
    again.stop().await;
    let left = notesd::masterkey::MasterKeys::load(&key).unwrap().unwrap();
    assert_eq!(left.ids(), [new.as_str()], "the old key is retired");
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(scheduled.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["master_key"],
        new.as_str(),
        "the backup is sealed with the new key"
    );
    let fresh = tempfile::tempdir().unwrap();
    let args = vec![
        "restore".into(),
        scheduled.display().to_string(),
        "--data-dir".into(),
        fresh.path().join("d").display().to_string(),
    ];
    let out = notesd(args, &key).await;
    assert!(out.status.success(), "{}", text(&out));
}

#[tokio::test]
async fn a_backup_through_the_socket_reports_its_progress_before_its_answer() {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let app = spawn_app().await;
    let user = app.new_user().await;
    app.create_note(&user.access, &json!({"title": "one"})).await;
    let backups = tempfile::tempdir().unwrap();
    let path = backups.path().join("b");
    let stream = tokio::net::UnixStream::connect(app.data_dir.join("control.sock"))
        .await
        .unwrap();
    let (read, mut write) = stream.into_split();
    let request = json!({"op": "backup", "path": path}).to_string() + "\n";
    write.write_all(request.as_bytes()).await.unwrap();
    let mut lines = tokio::io::BufReader::new(read).lines();
    let mut progress = Vec::new();
    let answer = loop {
        let line: Value = serde_json::from_str(&lines.next_line().await.unwrap().expect("a line")).unwrap();
        if line.get("ok").is_some() {
            break line;
        }
        progress.push((line["done"].as_u64().unwrap(), line["total"].as_u64().unwrap()));
    };
    assert_eq!(answer["ok"], true, "{answer}");
    assert!(!progress.is_empty(), "no progress line before the answer");
    assert!(
        progress.windows(2).all(|w| w[0].0 <= w[1].0) && progress.iter().all(|(d, t)| d <= t && *t > 0),
        "{progress:?}"
    );
    assert!(path.join("manifest.json").exists());
}
