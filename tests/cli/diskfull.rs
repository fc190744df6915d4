//! A full disk, for real: the binary's data directory, and its log file,
//! on a small tmpfs the test mounts (and unmounts), filled until writes
//! fail. A write that finds no room answers 503 problem+json and leaves
//! nothing; reads work again at once; writes resume by themselves when room
//! returns, though the log could not be written meanwhile; and a `kill -9`
//! while the disk is full loses no acknowledged write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{BIN, access_token, master_key_file, tools_required};

/// The server, logging (JSON) to `log` on the same filesystem as its data.
struct Logging {
    child: std::process::Child,
    addr: String,
}

impl Logging {
    fn start(data: &Path, log: &Path, args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("NOTESD_") {
                command.env_remove(name);
            }
        }
        let child = command
            .arg("serve")
            .args(args)
            .arg("--data-dir")
            .arg(data)
            .env("NOTESD_LOG_FORMAT", "json")
            .env("NOTESD_MASTER_KEY_FILE", master_key_file())
            .stdout(std::process::Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(log)
                    .unwrap(),
            )
            .spawn()
            .unwrap();
        // Owned at once, so a failure below still kills it.
        let mut server = Self {
            child,
            addr: String::new(),
        };
        let started = Instant::now();
        loop {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            if let Some(line) = text.lines().rev().find(|l| l.contains("notesd listening")) {
                let v: Value = serde_json::from_str(line).unwrap();
                v["addr"].as_str().unwrap().clone_into(&mut server.addr);
                return server;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the server did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Logging {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tmpfs mounted for the test, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Self> {
        let dir = tempfile::tempdir().unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"])
            .arg(dir.path())
            .output()
            .is_ok_and(|out| out.status.success());
        mounted.then_some(Self { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Fills the filesystem but for about `leave` bytes, with a file to delete
/// later.
fn fill(mount: &Path, leave: u64) -> PathBuf {
    let filler = mount.join(format!("filler-{}", std::process::id()));
    let stat = Command::new("stat")
        .args(["-f", "-c", "%a %S"])
        .arg(mount)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&stat.stdout).into_owned();
    let mut parts = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
    let (blocks, size) = (parts.next().unwrap(), parts.next().unwrap());
    let bytes = (blocks * size).saturating_sub(leave);
    std::fs::write(&filler, vec![0u8; usize::try_from(bytes).unwrap()]).unwrap();
    filler
}

struct Client {
    rt: tokio::runtime::Runtime,
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    fn write(&self, i: usize) -> (u16, Value, Option<String>) {
        self.rt.block_on(async {
            let resp = self
                .http
                .post(format!("{}/api/v1/notes", self.base))
                .bearer_auth(&self.token)
                .json(&json!({"title": format!("note {i}"), "content": "x".repeat(60_000)}))
                .send()
                .await
                .unwrap();
            let status = resp.status().as_u16();
            let kind = resp
                .headers()
                .get("content-type")
                .map(|v| v.to_str().unwrap().to_owned());
            (status, resp.json().await.unwrap_or(Value::Null), kind)
        })
    }

    fn read(&self, id: &str) -> u16 {
        self.rt.block_on(async {
            self.http
                .get(format!("{}/api/v1/notes/{id}", self.base))
                .bearer_auth(&self.token)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    }
}

/// Polls `check` for up to 10 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let started = Instant::now();
    while !check() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{what} did not happen within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Writes until one is refused; returns the ids acknowledged.
fn write_until_full(client: &Client, from: usize) -> Vec<String> {
    let mut acknowledged = Vec::new();
    for i in from..from + 2000 {
        let (status, body, kind) = client.write(i);
        match status {
            201 => acknowledged.push(body["id"].as_str().unwrap().to_owned()),
            503 => {
                assert_eq!(kind.as_deref(), Some("application/problem+json"), "{body}");
                assert_eq!(body["status"], 503, "{body}");
                return acknowledged;
            }
            other => panic!("a write on a full disk answered {other}: {body}"),
        }
    }
    panic!("the disk never filled");
}

#[test]
fn a_full_disk_answers_503_keeps_reads_resumes_writes_and_survives_a_kill() {
    let Some(tmpfs) = Tmpfs::mount("48m") else {
        assert!(
            !tools_required(),
            "cannot mount a tmpfs (the test needs root, as under make test)"
        );
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    };
    let data = tmpfs.path().join("data");
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--rate-limit",
        "0",
        "--auth-rate-limit",
        "0",
        "--db-cache-mib",
        "4",
    ];
    let log = tmpfs.path().join("notesd.log");
    let server = Logging::start(&data, &log, &args);
    let addr = server.addr.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let token = rt.block_on(access_token(&reqwest::Client::new(), &addr, "signup"));
    let client = Client {
        rt,
        http: reqwest::Client::new(),
        base: format!("http://{addr}"),
        token,
    };
    let filler = fill(tmpfs.path(), 4 << 20);
    let mut acknowledged = write_until_full(&client, 0);
    assert!(!acknowledged.is_empty());

    // Reads work again (after the file is opened again, a moment).
    eventually("a read after the failure", || {
        client.read(&acknowledged[0]) == 200
    });
    for id in &acknowledged {
        assert_eq!(client.read(id), 200, "acknowledged note {id}");
    }
    // Room again: writes resume with no restart.
    std::fs::remove_file(&filler).unwrap();
    eventually("a write once there is room", || client.write(20_000).0 == 201);

    // Full again, then killed while full: nothing acknowledged is lost.
    let filler = fill(tmpfs.path(), 2 << 20);
    acknowledged.extend(write_until_full(&client, 30_000));
    let mut server = server;
    server.child.kill().unwrap();
    let _ = server.child.wait();
    std::fs::remove_file(&filler).unwrap();
    std::fs::remove_file(&log).unwrap();
    let restarted = Logging::start(&data, &log, &args);
    let addr = restarted.addr.clone();
    let client = Client {
        base: format!("http://{addr}"),
        ..client
    };
    for id in &acknowledged {
        assert_eq!(client.read(id), 200, "acknowledged note {id} after the kill");
    }
    assert_eq!(client.write(40_000).0, 201);
}
