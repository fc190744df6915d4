//! `spawn_app()`: the real server (the same `Application::build` as
//! `notesd serve`) on 127.0.0.1:0 with a temporary data directory, and a
//! client with one method per endpoint.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use notesd::{Application, Clock, Settings};
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde_json::{Value, json};
use tempfile::TempDir;

static TRACING: Once = Once::new();
static MASTER_KEY_DIR: std::sync::OnceLock<TempDir> = std::sync::OnceLock::new();

/// The master key file every test server of this process uses: apart from
/// their data directories, and not the one of whoever runs the tests.
pub fn master_key_file() -> PathBuf {
    MASTER_KEY_DIR
        .get_or_init(|| tempfile::tempdir().expect("temp dir"))
        .path()
        .join("master.key")
}

pub struct TestApp {
    pub base: String,
    /// `http://addr` of the metrics listener, with `--metrics-listen`.
    pub metrics: Option<String>,
    pub client: reqwest::Client,
    pub clock: Clock,
    /// Kept so the directory lives as long as the app (restart tests reuse it).
    pub dir: Option<TempDir>,
    pub data_dir: PathBuf,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// A signed-up user with a live token pair.
#[derive(Debug, Clone)]
pub struct TestUser {
    pub id: String,
    pub email: String,
    pub password: String,
    pub access: String,
    pub refresh: String,
}

pub const PASSWORD: &str = "plaid otter cathedral";

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

/// Starts the app with extra `notesd serve` flags.
pub async fn spawn_app_with(flags: &[&str]) -> TestApp {
    let dir = tempfile::tempdir().expect("temp dir");
    let data_dir = dir.path().to_path_buf();
    let mut app = start(&data_dir, flags, Clock::default()).await;
    app.dir = Some(dir);
    app
}

/// Starts the app on `data_dir` with extra flags; the caller keeps the
/// directory.
pub async fn spawn_app_at(data_dir: &str, flags: &[&str]) -> TestApp {
    start(Path::new(data_dir), flags, Clock::default()).await
}

/// Starts the app on a data directory the test has filled.
pub async fn spawn_app_in(dir: TempDir) -> TestApp {
    let mut app = start(dir.path(), &[], Clock::default()).await;
    app.dir = Some(dir);
    app
}

async fn start(data_dir: &Path, flags: &[&str], clock: Clock) -> TestApp {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            notesd::telemetry::init(notesd::telemetry::LogFormat::Text);
        }
    });
    let dir = data_dir.to_str().expect("utf-8 path").to_owned();
    let key = master_key_file().to_str().expect("utf-8 path").to_owned();
    let mut args = vec!["--data-dir", dir.as_str(), "--listen", "127.0.0.1:0"];
    if !flags.contains(&"--master-key-file") {
        args.extend(["--master-key-file", key.as_str()]);
    }
    // Every test talks from 127.0.0.1; the rate limits are off unless a
    // test sets them (tests/api/limits.rs does).
    for (flag, off) in [("--rate-limit", "0"), ("--auth-rate-limit", "0")] {
        if !flags.contains(&flag) {
            args.extend([flag, off]);
        }
    }
    args.extend_from_slice(flags);
    let settings = Settings::from_args(args).expect("settings");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let app = Application::build_with_clock(settings, listener, clock.clone())
        .await
        .expect("app builds");
    let base = format!("http://{}", app.local_addr());
    let metrics = app.metrics_addr().map(|addr| format!("http://{addr}"));
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TestApp {
        base,
        metrics,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client"),
        clock,
        dir: None,
        data_dir: data_dir.to_path_buf(),
        shutdown: Some(tx),
        server: Some(server),
    }
}

impl TestApp {
    /// Stops the server and waits for it to close the database.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server result");
        }
    }

    /// Stops this server and starts a new one on the same data directory.
    pub async fn restart(self) -> TestApp {
        self.restart_with(&[]).await
    }

    /// As [`TestApp::restart`], with other flags.
    pub async fn restart_with(mut self, flags: &[&str]) -> TestApp {
        self.stop().await;
        let mut next = start(&self.data_dir, flags, self.clock.clone()).await;
        next.dir = self.dir.take();
        next
    }

    pub fn advance_clock(&self, by: Duration) {
        self.clock.advance(by);
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn request(&self, method: Method, path: &str, token: Option<&str>) -> RequestBuilder {
        let req = self.client.request(method, self.url(path));
        match token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    pub async fn signup(&self, email: &str, password: &str) -> Response {
        self.request(Method::POST, "/api/v1/auth/signup", None)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("signup")
    }

    pub async fn login(&self, email: &str, password: &str) -> Response {
        self.request(Method::POST, "/api/v1/auth/login", None)
            .json(&json!({ "email": email, "password": password }))
            .send()
            .await
            .expect("login")
    }

    pub async fn refresh(&self, refresh_token: &str) -> Response {
        self.request(Method::POST, "/api/v1/auth/refresh", None)
            .json(&json!({ "refresh_token": refresh_token }))
            .send()
            .await
            .expect("refresh")
    }

    pub async fn logout(&self, access: &str) -> Response {
        self.request(Method::POST, "/api/v1/auth/logout", Some(access))
            .send()
            .await
            .expect("logout")
    }

    pub async fn me(&self, access: &str) -> Response {
        self.request(Method::GET, "/api/v1/me", Some(access))
            .send()
            .await
            .expect("me")
    }

    /// The served OpenAPI document.
    pub async fn spec(&self) -> Value {
        self.request(Method::GET, "/openapi.json", None)
            .send()
            .await
            .expect("spec")
            .json()
            .await
            .expect("spec JSON")
    }

    pub async fn keys(&self) -> Value {
        let resp = self
            .request(Method::GET, "/api/v1/auth/keys", None)
            .send()
            .await
            .expect("keys");
        assert_eq!(resp.status(), StatusCode::OK);
        resp.json().await.expect("keys json")
    }

    pub async fn create_note(&self, access: &str, body: &Value) -> Response {
        self.request(Method::POST, "/api/v1/notes", Some(access))
            .json(body)
            .send()
            .await
            .expect("create note")
    }

    /// Creates a note and returns its JSON, asserting success.
    pub async fn new_note(&self, user: &TestUser, title: &str, tags: &[&str]) -> Value {
        let resp = self
            .create_note(
                &user.access,
                &json!({ "title": title, "content": "", "tags": tags }),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::CREATED);
        resp.json().await.expect("note json")
    }

    pub async fn get_note(&self, access: &str, id: &str) -> Response {
        self.request(Method::GET, &format!("/api/v1/notes/{id}"), Some(access))
            .send()
            .await
            .expect("get note")
    }

    pub async fn list_notes(&self, access: &str, query: &str) -> Response {
        self.request(Method::GET, &format!("/api/v1/notes?{query}"), Some(access))
            .send()
            .await
            .expect("list notes")
    }

    pub async fn write_note(
        &self,
        method: Method,
        access: &str,
        id: &str,
        if_match: Option<&str>,
        body: Option<&Value>,
    ) -> Response {
        let mut req = self.request(method, &format!("/api/v1/notes/{id}"), Some(access));
        if let Some(tag) = if_match {
            req = req.header("If-Match", tag);
        }
        if let Some(body) = body {
            req = req.json(body);
        }
        req.send().await.expect("write note")
    }

    /// Runs `notesd <args> --data-dir <this app's>`: an administration
    /// command, which reaches this server through its control socket.
    /// Returns (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str], stdin: &str) -> (bool, String, String) {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_notesd"));
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("NOTESD_") {
                command.env_remove(name);
            }
        }
        command
            .args(args)
            .arg("--data-dir")
            .arg(&self.data_dir)
            .env("NOTESD_MASTER_KEY_FILE", master_key_file())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let stdin = stdin.to_owned();
        // On a blocking thread: the server answering it runs on this
        // test's runtime.
        let out = tokio::task::spawn_blocking(move || {
            use std::io::Write;
            let mut child = command.spawn().expect("notesd runs");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(stdin.as_bytes())
                .expect("stdin written");
            child.wait_with_output().expect("notesd ends")
        })
        .await
        .expect("joined");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Makes a fresh user an admin (through the command line, as an
    /// operator would).
    pub async fn new_admin(&self) -> TestUser {
        let user = self.new_user().await;
        let (ok, _, err) = self
            .cli(
                &["user", "set-role", "--email", &user.email, "--role", "admin"],
                "",
            )
            .await;
        assert!(ok, "set-role: {err}");
        user
    }

    /// Creates an admin with the command line (whatever the signup
    /// policy) and logs it in; returns its access token.
    pub async fn new_admin_by_cli(&self) -> String {
        let email = format!("admin-{}@example.com", uuid::Uuid::now_v7().simple());
        let (ok, _, err) = self
            .cli(
                &["user", "create", "--admin", "--email", &email, "--password-stdin"],
                PASSWORD,
            )
            .await;
        assert!(ok, "user create: {err}");
        let resp = self.login(&email, PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::OK);
        let pair: Value = resp.json().await.expect("login json");
        pair["access_token"].as_str().expect("access").to_owned()
    }

    /// Signs up a fresh user with a unique email.
    pub async fn new_user(&self) -> TestUser {
        let email = format!("user-{}@example.com", uuid::Uuid::now_v7().simple());
        let resp = self.signup(&email, PASSWORD).await;
        assert_eq!(resp.status(), StatusCode::CREATED, "signup of a fresh user");
        let body: Value = resp.json().await.expect("signup json");
        TestUser {
            id: body["user"]["id"].as_str().expect("id").to_owned(),
            email,
            password: PASSWORD.to_owned(),
            access: body["tokens"]["access_token"]
                .as_str()
                .expect("access")
                .to_owned(),
            refresh: body["tokens"]["refresh_token"]
                .as_str()
                .expect("refresh")
                .to_owned(),
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Asserts an RFC 9457 problem response and returns its body.
pub async fn assert_problem(resp: Response, status: StatusCode, why: &str) -> Value {
    assert_eq!(resp.status(), status, "{why}");
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "{why}: content type was {content_type:?}"
    );
    let body: Value = resp.json().await.expect("problem json");
    assert_eq!(body["status"], status.as_u16(), "{why}: status member");
    for member in ["type", "title", "detail"] {
        assert!(
            body[member].is_string(),
            "{why}: problem lacks `{member}`: {body}"
        );
    }
    body
}

/// The field names a validation problem lists.
pub fn problem_fields(problem: &Value) -> Vec<String> {
    problem["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .filter_map(|e| e["field"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}
