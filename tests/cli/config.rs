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
fn check_config_refuses_settings_that_would_weaken_a_guarantee() {
    let out = Command::new(BIN)
        .args(["check-config", "--session-idle-ttl", "1m"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--session-idle-ttl"));
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
