//! `--config`, `NOTESD_CONFIG` and `notesd check-config`, on the binary.

use std::process::Command;

use super::{BIN, Server, get};

fn write_config(dir: &std::path::Path, content: &str) -> std::path::PathBuf {
    let path = dir.join("notesd.toml");
    std::fs::write(&path, content).unwrap();
    path
}

/// The value and origin `check-config` prints for `key`.
fn shown<'a>(out: &'a str, key: &str) -> Option<(&'a str, &'a str)> {
    let line = out.lines().find(|l| l.starts_with(&format!("{key} = ")))?;
    let (value, origin) = line.split_once(" # ")?;
    Some((value.trim_end().split_once(" = ")?.1, origin.trim()))
}

#[test]
fn a_flag_wins_over_the_environment_which_wins_over_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        dir.path(),
        "[limits]\nmax-body-bytes = 4096\nrate-limit = 7\nauth-rate-limit = 3\n",
    );
    let out = Command::new(BIN)
        .args(["check-config", "--auth-rate-limit", "5"])
        .env("NOTESD_CONFIG", &path)
        .env("NOTESD_RATE_LIMIT", "8")
        .env("NOTESD_AUTH_RATE_LIMIT", "4")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(shown(&stdout, "max-body-bytes"), Some(("4096", "file")));
    assert_eq!(shown(&stdout, "rate-limit"), Some(("8", "environment")));
    assert_eq!(shown(&stdout, "auth-rate-limit"), Some(("5", "flag")));
    assert_eq!(shown(&stdout, "listen"), Some(("\"127.0.0.1:8080\"", "default")));
    assert!(stdout.contains("The settings are valid"), "{stdout}");
}

#[test]
fn serve_takes_its_settings_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[http]\nlisten = \"127.0.0.1:0\"\ndocs = false\n");
    let data = dir.path().join("data");
    let server = Server::start_with(&data, &["--config", path.to_str().unwrap()], &[]);
    let addr = server.address();
    assert_eq!(get(&addr, "/healthz"), 200);
    assert_eq!(get(&addr, "/openapi.json"), 404, "docs = false from the file");
}

#[test]
fn a_bad_file_stops_the_start_and_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (content, needle) in [
        ("[limits]\nmax-body-byte = 4096\n", "limits.max-body-byte"),
        ("[auth]\nmax-body-bytes = 4096\n", "belongs in [limits]"),
        ("[connections]\nwrite-timeout = \"soon\"\n", "write-timeout"),
        ("[limits\n", "notesd.toml"),
    ] {
        let path = write_config(dir.path(), content);
        let out = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(&path)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{content}: {stderr}");
        assert!(stderr.contains(needle), "{content}: {stderr}");
    }
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn check_config_refuses_what_serve_would_refuse() {
    for (args, needle) in [
        (&["--session-idle-ttl", "1m"][..], "--session-idle-ttl"),
        (&["--argon2-memory-kib", "1"][..], "--argon2-memory-kib"),
        (
            &[
                "--tls",
                "files",
                "--tls-cert",
                "/nonexistent/c.pem",
                "--tls-key",
                "/nonexistent/k.pem",
            ][..],
            "/nonexistent/c.pem",
        ),
    ] {
        let out = Command::new(BIN).arg("check-config").args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
    }
}

#[test]
fn only_a_regular_file_of_bounded_size_is_read_and_every_value_is_checked() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(2 * 1024 * 1024)).unwrap();
    let check = |config: &std::path::Path, extra: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(BIN);
        cmd.args(["check-config", "--config"]).arg(config).args(extra);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // A FIFO would block the start; a device or a huge file would eat memory.
    for path in [fifo.as_path(), std::path::Path::new("/dev/zero"), big.as_path()] {
        let (code, stderr) = check(path, &[], &[]);
        assert_eq!(code, Some(2), "{}: {stderr}", path.display());
    }
    // An empty list for a one-value setting is not "unset".
    let empty = write_config(dir.path(), "[http]\nlisten = []\n");
    let (code, stderr) = check(&empty, &[], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("http.listen"), "{stderr}");
    // A broken value is refused even while a flag or variable overrides it.
    let broken = write_config(
        dir.path(),
        "[limits]\nmax-body-bytes = \"garbage\"\nrate-limit = 1.5\n",
    );
    let (code, stderr) = check(
        &broken,
        &["--max-body-bytes", "4096"],
        &[("NOTESD_RATE_LIMIT", "5")],
    );
    assert_eq!(code, Some(2), "{stderr}");
}

#[test]
fn a_file_others_can_write_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[http]\nlisten = \"127.0.0.1:0\"\n");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        &["--config", path.to_str().unwrap()],
        &[],
    );
    assert!(server.wait_for("writable by other users").is_some());
}
