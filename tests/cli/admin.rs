//! The administration commands against a stopped and a running server,
//! the audit log's tamper evidence, and every security event, stored and
//! logged, from the real binary.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

use super::{BIN, Server};

const PASSWORD: &str = "plaid otter cathedral";

/// Runs `notesd <args> --data-dir <dir>` with `stdin` as its input.
fn notesd(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(BIN);
    // Nothing from the caller's environment (`make test` sets
    // NOTESD_TEST_TOOLS, which notesd would warn about).
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("NOTESD_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .env("NOTESD_MASTER_KEY_FILE", super::master_key_file())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A failed command: non-zero status and one line on stderr.
fn assert_refused(out: &Output, says: &str) {
    assert!(!out.status.success(), "{}", stdout(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("notesd: ") && err.contains(says), "{err}");
}

#[test]
fn commands_work_on_a_stopped_server_and_through_a_running_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &tmp.path().join("data");
    // Before the first start: the first admin.
    let out = notesd(
        dir,
        &[
            "user",
            "create",
            "--admin",
            "--email",
            "Root@Example.com",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("root@example.com (admin)"));
    let again = notesd(
        dir,
        &[
            "user",
            "create",
            "--email",
            "root@example.com",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert_refused(&again, "exists");
    assert_refused(
        &notesd(dir, &["user", "disable", "--email", "nobody@example.com"], ""),
        "no such account",
    );
    assert_refused(
        &notesd(dir, &["user", "create", "--email", "x@example.com"], ""),
        "--password-stdin",
    );
    let weak = notesd(
        dir,
        &[
            "user",
            "create",
            "--email",
            "weak@example.com",
            "--password-stdin",
        ],
        "password",
    );
    assert_refused(&weak, "password");
    let argv = notesd(
        dir,
        &[
            "user",
            "create",
            "--email",
            "x@example.com",
            "--password",
            PASSWORD,
        ],
        "",
    );
    assert_eq!(argv.status.code(), Some(2), "no password on the command line");
    assert!(stdout(&notesd(dir, &["user", "list"], "")).contains("root@example.com\tadmin\tenabled"));

    through_a_running_server(dir);

    // Stopped again: the same commands on the database.
    let out = notesd(dir, &["audit", "verify"], "");
    assert!(stdout(&out).starts_with("audit log intact"), "{}", stderr(&out));
    let listed = stdout(&notesd(dir, &["user", "list"], ""));
    assert!(listed.contains("u@example.com\tuser\tenabled"), "{listed}");
    assert_eq!(
        stdout(&notesd(dir, &["keys", "list"], "")).lines().count(),
        2,
        "both keys"
    );
}

fn through_a_running_server(dir: &Path) {
    let mut server = Server::start(dir, &[]);
    let addr = server.address();
    let socket = dir.join("control.sock");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&socket).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the control socket is private");
    // Through the socket: the server's own memory sees the change.
    let out = notesd(
        dir,
        &["user", "create", "--email", "u@example.com", "--password-stdin"],
        PASSWORD,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let login = |email: &'static str| {
        let req = client
            .post(format!("http://{addr}/api/v1/auth/login"))
            .json(&json!({ "email": email, "password": PASSWORD }));
        async move { req.send().await.unwrap() }
    };
    let pair: Value = rt.block_on(async { login("u@example.com").await.json().await.unwrap() });
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let me = |token: String| {
        let req = client.get(format!("http://{addr}/api/v1/me")).bearer_auth(token);
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(rt.block_on(me(access.clone())), 200);
    let out = notesd(dir, &["user", "disable", "--email", "u@example.com"], "");
    assert!(stdout(&out).contains("1 sessions ended"), "{}", stderr(&out));
    assert_eq!(
        rt.block_on(me(access)),
        401,
        "at once, through the server's memory"
    );
    assert_eq!(
        rt.block_on(async { login("u@example.com").await.status().as_u16() }),
        401
    );
    assert!(
        notesd(dir, &["user", "enable", "--email", "u@example.com"], "")
            .status
            .success()
    );
    let admin: Value = rt.block_on(async { login("root@example.com").await.json().await.unwrap() });
    let users = rt.block_on(
        client
            .get(format!("http://{addr}/api/v1/admin/users"))
            .bearer_auth(admin["access_token"].as_str().unwrap())
            .send(),
    );
    assert_eq!(
        users.unwrap().status().as_u16(),
        200,
        "the first admin administers"
    );
    assert!(notesd(dir, &["keys", "rotate"], "").status.success());
    assert!(server.terminate().success());
    assert!(!socket.exists(), "the socket goes with the server");
}

#[test]
fn every_command_has_help() {
    for command in [
        &["user"][..],
        &["user", "create"],
        &["user", "list"],
        &["user", "set-role"],
        &["user", "disable"],
        &["user", "enable"],
        &["user", "reset-password"],
        &["user", "delete"],
        &["invite", "create"],
        &["keys", "list"],
        &["keys", "rotate"],
        &["audit", "verify"],
        &["master-key", "status"],
        &["master-key", "rotate"],
        &["backup"],
        &["restore"],
    ] {
        let out = Command::new(BIN).args(command).arg("--help").output().unwrap();
        assert!(out.status.success(), "{command:?}");
        assert!(stdout(&out).contains("Usage: notesd"), "{command:?}");
    }
}

#[test]
fn audit_verify_finds_the_record_that_was_edited() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &tmp.path().join("data");
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let out = notesd(
            dir,
            &["user", "create", "--email", email, "--password-stdin"],
            PASSWORD,
        );
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(stdout(&notesd(dir, &["audit", "verify"], "")).contains("3 records"));
    // What someone with the file but not the key can do: change a
    // record's text, keeping its MAC.
    {
        let db = redb::Database::open(dir.join("notesd.redb")).unwrap();
        let table: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("audit");
        let txn = db.begin_write().unwrap();
        {
            let mut audit = txn.open_table(table).unwrap();
            let mut value = redb::ReadableTable::get(&audit, 2)
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            let at = value.windows(9).position(|w| w == b"role user").unwrap();
            value[at + 5..at + 9].copy_from_slice(b"root");
            audit.insert(2, value.as_slice()).unwrap();
        }
        txn.commit().unwrap();
    }
    let out = notesd(dir, &["audit", "verify"], "");
    assert_refused(&out, "broken at record 2");
}

/// A small HTTP client for one server.
struct Api {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
    addr: String,
}

impl Api {
    fn call(&self, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .client
            .request(method.parse().unwrap(), format!("http://{}{path}", self.addr));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        self.rt.block_on(async {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap();
            (status, serde_json::from_str(&text).unwrap_or(Value::Null))
        })
    }

    fn login(&self, email: &str, password: &str) -> (u16, Value) {
        self.call(
            "POST",
            "/api/v1/auth/login",
            None,
            Some(json!({"email": email, "password": password})),
        )
    }
}

#[test]
fn every_security_event_is_stored_and_logged() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = &tmp.path().join("data");
    let server = Server::start_with(
        dir,
        &[
            "--listen",
            "127.0.0.1:0",
            "--signup",
            "invite",
            "--refresh-reuse-grace",
            "0s",
            "--login-free-failures",
            "1",
            "--auth-rate-limit",
            "1000",
        ],
        &[],
    );
    let api = Api {
        rt: tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap(),
        client: reqwest::Client::new(),
        addr: server.address(),
    };
    let out = notesd(
        dir,
        &[
            "user",
            "create",
            "--admin",
            "--email",
            "root@example.com",
            "--password-stdin",
        ],
        PASSWORD,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, admin) = api.login("root@example.com", PASSWORD);
    let admin = admin["access_token"].as_str().unwrap().to_owned();
    let admin = Some(admin.as_str());
    let (status, issued) = api.call("POST", "/api/v1/admin/invites", admin, Some(json!({})));
    assert_eq!(status, 201);
    let (status, body) = api.call(
        "POST",
        "/api/v1/auth/signup",
        None,
        Some(json!({"email": "ann@example.com", "password": PASSWORD, "invite_code": issued["code"]})),
    );
    assert_eq!(status, 201);
    let ann = body["user"]["id"].as_str().unwrap().to_owned();
    let new_password = own_account_events(&api, &body);
    second_factor_events(&api, admin, &ann, new_password);
    let wrong: Vec<u16> = (0..2)
        .map(|_| api.login("ann@example.com", "not the password").0)
        .collect();
    assert_eq!(wrong, [401, 401]);
    let user = |rest: &str| format!("/api/v1/admin/users/{ann}{rest}");
    for (method, path, body) in [
        ("PUT", user("/password"), Some(json!({"password": PASSWORD}))),
        ("PUT", user("/role"), Some(json!({"role": "admin"}))),
        ("POST", user("/disable"), None),
        ("POST", user("/enable"), None),
    ] {
        let (status, _) = api.call(method, &path, admin, body);
        assert!(status < 300, "{method} {path}: {status}");
    }
    let (_, spare) = api.call("POST", "/api/v1/admin/invites", admin, Some(json!({})));
    let spare = spare["invite"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        api.call("DELETE", &format!("/api/v1/admin/invites/{spare}"), admin, None)
            .0,
        204
    );
    assert!(notesd(dir, &["keys", "rotate"], "").status.success());
    assert_eq!(api.call("DELETE", &user(""), admin, None).0, 204);

    assert_every_kind_stored_and_logged(&api, admin, &server, new_password);
    let out = notesd(dir, &["audit", "verify"], "");
    assert!(stdout(&out).starts_with("audit log intact"), "{}", stderr(&out));
}

/// Refresh, reuse, logins, ending sessions, a password change: what a
/// user's own actions record. Returns the new password.
fn own_account_events(api: &Api, body: &Value) -> &'static str {
    let first_refresh = body["tokens"]["refresh_token"].clone();
    let (_, pair) = api.call(
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": first_refresh})),
    );
    assert!(pair["access_token"].is_string());
    let (status, _) = api.call(
        "POST",
        "/api/v1/auth/refresh",
        None,
        Some(json!({"refresh_token": first_refresh})),
    );
    assert_eq!(status, 401, "reuse");
    let (_, one) = api.login("ann@example.com", PASSWORD);
    let (_, two) = api.login("ann@example.com", PASSWORD);
    let (_, _three) = api.login("ann@example.com", PASSWORD);
    let token = |pair: &Value| pair["access_token"].as_str().unwrap().to_owned();
    let (status, sessions) = api.call("GET", "/api/v1/me/sessions", Some(&token(&one)), None);
    assert_eq!(status, 200);
    // Newest first: three's session, then two's.
    let two_id = sessions["items"][1]["id"].as_str().unwrap().to_owned();
    let (status, _) = api.call(
        "DELETE",
        &format!("/api/v1/me/sessions/{two_id}"),
        Some(&token(&one)),
        None,
    );
    assert_eq!(status, 204);
    assert_eq!(api.call("GET", "/api/v1/me", Some(&token(&two)), None).0, 401);
    assert_eq!(
        api.call("POST", "/api/v1/auth/logout", Some(&token(&one)), None)
            .0,
        204
    );
    let (_, four) = api.login("ann@example.com", PASSWORD);
    assert_eq!(
        api.call("DELETE", "/api/v1/me/sessions", Some(&token(&four)), None)
            .0,
        204
    );
    let new_password = "saffron kettle meridian";
    let change = json!({"current_password": PASSWORD, "new_password": new_password});
    assert_eq!(
        api.call("PUT", "/api/v1/me/password", Some(&token(&four)), Some(change))
            .0,
        204
    );
    new_password
}

/// Enrolment, a wrong code, logins with a code and a recovery code, new
/// recovery codes, turning it off, an admin's reset: the second factor's
/// events. Codes come from `totp-lite` at this machine's clock (the
/// server's); each step is used once, so the login takes the next one.
fn second_factor_events(api: &Api, admin: Option<&str>, ann: &str, password: &str) {
    let (status, pair) = api.login("ann@example.com", password);
    assert_eq!(status, 200);
    let access = pair["access_token"].as_str().unwrap().to_owned();
    let me = Some(access.as_str());
    let (status, enrolment) = api.call(
        "POST",
        "/api/v1/me/mfa/totp",
        me,
        Some(json!({"password": password})),
    );
    assert_eq!(status, 201);
    let secret = data_encoding::BASE32_NOPAD
        .decode(enrolment["secret"].as_str().unwrap().as_bytes())
        .unwrap();
    let code = |steps: u64| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        totp_lite::totp_custom::<totp_lite::Sha1>(30, 6, &secret, now + steps * 30)
    };
    let wrong = if code(0) == "000000" { "111111" } else { "000000" };
    let confirm = |code: &str| {
        api.call(
            "POST",
            "/api/v1/me/mfa/totp/confirm",
            me,
            Some(json!({"code": code})),
        )
    };
    assert_eq!(confirm(wrong).0, 400);
    let (status, codes) = confirm(&code(0));
    assert_eq!(status, 200);
    let recovery = |i: usize| codes["recovery_codes"][i].as_str().unwrap().to_owned();
    let second_step = |code: String| {
        let (status, challenge) = api.login("ann@example.com", password);
        assert_eq!(status, 202);
        let body = json!({"mfa_token": challenge["mfa_token"], "code": code});
        api.call("POST", "/api/v1/auth/login/mfa", None, Some(body)).0
    };
    assert_eq!(second_step(code(1)), 200);
    assert_eq!(second_step(recovery(0)), 200);
    let with = |code: String| Some(json!({"password": password, "code": code}));
    let (status, fresh) = api.call("POST", "/api/v1/me/mfa/recovery-codes", me, with(recovery(1)));
    assert_eq!(status, 200);
    let fresh = fresh["recovery_codes"][0].as_str().unwrap().to_owned();
    assert_eq!(
        api.call("POST", "/api/v1/me/mfa/totp/disable", me, with(fresh)).0,
        204
    );
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/me/mfa/totp",
            me,
            Some(json!({"password": password}))
        )
        .0,
        201
    );
    let reset = format!("/api/v1/admin/users/{ann}/mfa");
    assert_eq!(api.call("DELETE", &reset, admin, None).0, 204);
}

fn assert_every_kind_stored_and_logged(api: &Api, admin: Option<&str>, server: &Server, new_password: &str) {
    let mut stored = std::collections::HashSet::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api.call(
            "GET",
            &format!("/api/v1/admin/audit?limit=100{cursor}"),
            admin,
            None,
        );
        assert_eq!(status, 200);
        for event in page["items"].as_array().unwrap() {
            stored.insert(event["kind"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    let mut logged = std::collections::HashSet::new();
    while let Ok(line) = server.lines.recv_timeout(std::time::Duration::from_millis(500)) {
        let Ok(line) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if line["target"] == "audit" {
            logged.insert(line["event"].as_str().unwrap_or_default().to_owned());
        }
        assert!(!line.to_string().contains(PASSWORD) && !line.to_string().contains(new_password));
    }
    for kind in notesd::audit::AuditKind::ALL.iter().map(|k| k.as_str()) {
        assert!(stored.contains(kind), "{kind} stored: {stored:?}");
        assert!(logged.contains(kind), "{kind} logged: {logged:?}");
    }
}
