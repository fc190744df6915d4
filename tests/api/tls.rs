//! HTTPS with certificate files: hot reload, a broken replacement kept out,
//! HSTS only over TLS, ALPN, and the plain-HTTP redirect listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notesd::tls::files::CertFiles;
use notesd::{Application, Settings};
use reqwest::StatusCode;

use crate::helpers::{assert_problem, spawn_app};

#[path = "../common/certs.rs"]
mod certs;
use certs::{TestCa, client_trusting, peer_cert};

/// A client that trusts only `ca` and does not follow redirects.
fn client_for(ca: &TestCa) -> reqwest::Client {
    client_trusting(&ca.pem())
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Replaces a file the way deployment tools do: write aside, then rename.
fn replace(path: &Path, contents: &str) {
    let tmp = path.with_extension("new");
    std::fs::write(&tmp, contents).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

struct TlsApp {
    https: String,
    redirect: String,
    files: Arc<CertFiles>,
    cert_path: PathBuf,
    key_path: PathBuf,
    _dir: tempfile::TempDir,
    _server: tokio::task::JoinHandle<std::io::Result<()>>,
    /// `http://addr` of the metrics listener, with `--metrics-listen`.
    metrics: Option<String>,
}

/// `--tls files` settings for `cert.pem` and `key.pem` in `dir` (data in
/// `dir/data`), plus `flags`.
fn files_settings(dir: &Path, flags: &[&str]) -> Settings {
    let path = |name: &str| dir.join(name).to_str().unwrap().to_owned();
    let (data, cert, key) = (path("data"), path("cert.pem"), path("key.pem"));
    let mut args = vec![
        "--data-dir",
        &data,
        "--tls",
        "files",
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ];
    args.extend_from_slice(flags);
    Settings::from_args(args).unwrap()
}

/// The real server in `--tls files` mode with `leaf`, a redirect listener
/// and `flags`.
async fn spawn_tls_app(leaf: &certs::Leaf, flags: &[&str]) -> TlsApp {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, &leaf.cert_pem).unwrap();
    std::fs::write(&key_path, &leaf.key_pem).unwrap();
    let mut args = vec![
        "--tls-reload-interval",
        "100ms",
        "--http-redirect-listen",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(flags);
    let settings = files_settings(dir.path(), &args);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build(settings, listener).await.unwrap();
    let https = format!("https://{}", app.local_addr());
    let redirect = format!("http://{}", app.redirect_addr().unwrap());
    let files = app.cert_files().unwrap();
    let metrics = app.metrics_addr().map(|addr| format!("http://{addr}"));
    let server = tokio::spawn(app.run_until(std::future::pending()));
    TlsApp {
        https,
        redirect,
        files,
        cert_path,
        key_path,
        _dir: dir,
        _server: server,
        metrics,
    }
}

#[tokio::test]
async fn files_mode_serves_https_and_reloads_a_replaced_certificate() {
    let ca = TestCa::new();
    let first = ca.leaf();
    let app = spawn_tls_app(&first, &[]).await;

    // A client with only our CA as root verifies the chain and the name.
    let early = client_for(&ca);
    let resp = early.get(format!("{}/healthz", app.https)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(peer_cert(&resp), first.der);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );

    // New files: the watcher picks them up without a restart.
    let second = ca.leaf();
    replace(&app.key_path, &second.key_pem);
    replace(&app.cert_path, &second.cert_pem);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = client_for(&ca)
            .get(format!("{}/healthz", app.https))
            .send()
            .await
            .unwrap();
        if peer_cert(&resp) == second.der {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate was not served within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The connection opened before the change was not dropped.
    let resp = early.get(format!("{}/healthz", app.https)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        peer_cert(&resp),
        first.der,
        "same connection, still the first certificate"
    );

    // A corrupt certificate and then a key from another pair: both refused,
    // the second certificate stays.
    replace(&app.cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    assert!(!app.files.reload_if_changed());
    replace(&app.cert_path, &second.cert_pem);
    replace(&app.key_path, &ca.leaf().key_pem);
    assert!(!app.files.reload_if_changed());
    assert!(!app.files.reload_if_changed(), "refused on the second look too");
    // An expired certificate is refused like a broken one.
    let expired = ca.leaf_with(|p| {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2020, 2, 1);
    });
    replace(&app.key_path, &expired.key_pem);
    replace(&app.cert_path, &expired.cert_pem);
    assert!(!app.files.reload_if_changed());
    assert!(!app.files.reload_if_changed());
    let resp = client_for(&ca)
        .get(format!("{}/healthz", app.https))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(peer_cert(&resp), second.der);
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_https_only() {
    let ca = TestCa::new();
    let app = spawn_tls_app(&ca.leaf(), &[]).await;
    let https_port = app.https.rsplit(':').next().unwrap();
    let client = client_for(&ca);

    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = client
            .request(method, format!("{}/api/v1/notes?limit=5", app.redirect))
            .header("host", "LocalHost")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            resp.headers()["location"],
            format!("https://localhost:{https_port}/api/v1/notes?limit=5").as_str()
        );
        assert!(resp.headers().get("strict-transport-security").is_none());
        assert!(resp.text().await.unwrap().is_empty(), "nothing but the redirect");
    }
    // A Host that is not a plain name, or one the certificate does not
    // cover, gets no redirect anywhere (regression: with `--tls files` any
    // Host was redirected to, an open redirect).
    for (host, why) in [
        ("evil.example@localhost", "user info"),
        ("evil.example", "a name the certificate does not cover"),
        ("127.0.0.2", "an address the certificate does not cover"),
    ] {
        let resp = client
            .get(format!("{}/", app.redirect))
            .header("host", host)
            .send()
            .await
            .unwrap();
        assert!(resp.headers().get("location").is_none(), "{why}");
        assert_problem(resp, StatusCode::BAD_REQUEST, why).await;
    }
    let resp = client
        .get(format!("{}/x", app.redirect))
        .header("host", "127.0.0.1:80")
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::PERMANENT_REDIRECT,
        "an IP address the certificate covers"
    );
}

#[tokio::test]
async fn a_silent_connection_is_closed_within_the_header_timeout() {
    use tokio::io::AsyncReadExt;
    let app = spawn_tls_app(&TestCa::new().leaf(), &["--header-timeout", "1s"]).await;
    // Connects and never sends a ClientHello: the handshake counts against
    // the same deadline as a request head.
    let mut stream = tokio::net::TcpStream::connect(app.https.trim_start_matches("https://"))
        .await
        .unwrap();
    let mut buf = [0; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("closed well before 10 s");
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "closed without an answer: {read:?}"
    );
}

#[tokio::test]
async fn hsts_follows_its_settings() {
    let ca = TestCa::new();
    let app = spawn_tls_app(
        &ca.leaf(),
        &["--hsts-max-age", "300", "--hsts-include-subdomains", "false"],
    )
    .await;
    let resp = client_for(&ca)
        .get(format!("{}/nope", app.https))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(resp.headers()["strict-transport-security"], "max-age=300");
}

#[tokio::test]
async fn plain_http_answers_carry_no_hsts() {
    let app = spawn_app().await;
    let resp = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("strict-transport-security").is_none());
}

#[tokio::test]
async fn a_plain_http_request_to_the_tls_port_gets_no_answer() {
    let ca = TestCa::new();
    let app = spawn_tls_app(&ca.leaf(), &[]).await;
    let plain = app.https.replace("https://", "http://");
    let result = reqwest::Client::new()
        .get(format!("{plain}/healthz"))
        .send()
        .await;
    assert!(result.is_err(), "no HTTP answer over a TLS port: {result:?}");
}

#[tokio::test]
async fn a_broken_certificate_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, "not a certificate").unwrap();
    std::fs::write(&key_path, "not a key").unwrap();
    let settings = files_settings(dir.path(), &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Application::build(settings, listener).await.err().unwrap();
    assert!(err.to_string().contains("cert.pem"), "{err}");
}

/// A hand-made ClientHello, so the test can offer what no modern client
/// library would: old protocol versions and weak cipher suites.
fn client_hello(version: [u8; 2], suites: &[u16]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&version);
    body.extend_from_slice(&[7; 32]); // random
    body.push(0); // no session id
    let suite_bytes: Vec<u8> = suites.iter().flat_map(|s| s.to_be_bytes()).collect();
    body.extend_from_slice(&u16::try_from(suite_bytes.len()).unwrap().to_be_bytes());
    body.extend_from_slice(&suite_bytes);
    body.extend_from_slice(&[1, 0]); // compression: null only
    // What an ECDHE-ECDSA handshake needs: x25519 and P-256, uncompressed
    // points, ecdsa_secp256r1_sha256 signatures.
    let extensions: &[u8] = &[
        0x00, 0x0a, 0x00, 0x06, 0x00, 0x04, 0x00, 0x1d, 0x00, 0x17, // supported_groups
        0x00, 0x0b, 0x00, 0x02, 0x01, 0x00, // ec_point_formats
        0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03, // signature_algorithms
    ];
    body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
    body.extend_from_slice(extensions);
    let mut handshake = vec![1]; // ClientHello
    handshake.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes()[1..]);
    handshake.extend_from_slice(&body);
    let mut record = vec![0x16, 0x03, 0x01];
    record.extend_from_slice(&u16::try_from(handshake.len()).unwrap().to_be_bytes());
    record.extend_from_slice(&handshake);
    record
}

/// Sends `hello` and returns the first five bytes of the server's answer
/// plus two more: (record type, version, length, first two body bytes).
async fn first_answer(addr: &str, hello: &[u8]) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(hello).await.unwrap();
    let mut answer = vec![0; 7];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut answer))
        .await
        .expect("the server answers")
        .expect("seven bytes");
    answer
}

#[tokio::test]
async fn old_protocols_and_weak_ciphers_are_refused() {
    const ALERT: u8 = 0x15;
    const HANDSHAKE: u8 = 0x16;
    const PROTOCOL_VERSION: u8 = 70;
    const HANDSHAKE_FAILURE: u8 = 40;
    const ECDHE_ECDSA_AES128_GCM_SHA256: u16 = 0xc02b;
    // RC4, 3DES, CBC with SHA-1, CBC with SHA-256, NULL, export RC4.
    let weak: &[u16] = &[
        0xc007, 0xc008, 0xc009, 0xc023, 0x0005, 0x000a, 0x002f, 0x003c, 0x0002, 0x0003,
    ];

    let ca = TestCa::new();
    let app = spawn_tls_app(&ca.leaf(), &[]).await;
    let addr = app.https.trim_start_matches("https://");

    // Control: a sound TLS 1.2 offer gets a ServerHello, so the probe works.
    let answer = first_answer(addr, &client_hello([3, 3], &[ECDHE_ECDSA_AES128_GCM_SHA256])).await;
    assert_eq!((answer[0], answer[5]), (HANDSHAKE, 2), "ServerHello: {answer:?}");

    for (name, version) in [("TLS 1.0", [3, 1]), ("TLS 1.1", [3, 2]), ("SSL 3", [3, 0])] {
        let answer = first_answer(
            addr,
            &client_hello(version, &[ECDHE_ECDSA_AES128_GCM_SHA256, 0xc009]),
        )
        .await;
        assert_eq!(
            (answer[0], answer[6]),
            (ALERT, PROTOCOL_VERSION),
            "{name} refused: {answer:?}"
        );
    }
    let answer = first_answer(addr, &client_hello([3, 3], weak)).await;
    assert_eq!(
        (answer[0], answer[6]),
        (ALERT, HANDSHAKE_FAILURE),
        "weak suites refused: {answer:?}"
    );
}

#[tokio::test]
async fn the_metrics_show_when_the_served_certificate_expires() {
    let ca = TestCa::new();
    let not_after = rcgen::date_time_ymd(2031, 5, 6);
    let leaf = ca.leaf_with(|params| params.not_after = not_after);
    let app = spawn_tls_app(&leaf, &["--metrics-listen", "127.0.0.1:0"]).await;
    let body = reqwest::get(format!("{}/metrics", app.metrics.as_deref().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let line = format!(
        "notesd_tls_certificate_expiry_timestamp_seconds {}",
        not_after.unix_timestamp()
    );
    assert!(body.lines().any(|l| l == line), "{line} in {body}");
}
