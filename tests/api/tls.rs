//! HTTPS with certificate files: hot reload, a broken replacement kept out,
//! HSTS only over TLS, ALPN, and the plain-HTTP redirect listener.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use notesd::tls::files::CertFiles;
use notesd::{Application, Settings};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use reqwest::StatusCode;
use reqwest::tls::TlsInfo;

use crate::helpers::spawn_app;

/// A throwaway CA that signs leaf certificates for 127.0.0.1.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    /// A leaf for `localhost` and `127.0.0.1`: (certificate PEM, key PEM, DER).
    fn leaf(&self) -> (String, String, Vec<u8>) {
        let params = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem(), cert.der().to_vec())
    }

    fn client(&self) -> reqwest::Client {
        let root = reqwest::Certificate::from_pem(self.cert.pem().as_bytes()).unwrap();
        reqwest::Client::builder()
            .tls_built_in_root_certs(false)
            .add_root_certificate(root)
            .tls_info(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }
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
}

async fn spawn_tls_app(cert_pem: &str, key_pem: &str) -> TlsApp {
    let dir = tempfile::tempdir().unwrap();
    let cert_path = dir.path().join("cert.pem");
    let key_path = dir.path().join("key.pem");
    std::fs::write(&cert_path, cert_pem).unwrap();
    std::fs::write(&key_path, key_pem).unwrap();
    let data = dir.path().join("data");
    let settings = Settings::from_args([
        "--data-dir",
        data.to_str().unwrap(),
        "--tls",
        "files",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
        "--tls-reload-interval",
        "100ms",
        "--http-redirect-listen",
        "127.0.0.1:0",
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = Application::build(settings, listener).await.unwrap();
    let https = format!("https://{}", app.local_addr());
    let redirect = format!("http://{}", app.redirect_addr().unwrap());
    let files = app.cert_files().unwrap();
    let server = tokio::spawn(app.run_until(std::future::pending()));
    TlsApp {
        https,
        redirect,
        files,
        cert_path,
        key_path,
        _dir: dir,
        _server: server,
    }
}

/// The leaf certificate a response came over.
fn served_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<TlsInfo>()
        .and_then(TlsInfo::peer_certificate)
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn files_mode_serves_https_and_reloads_a_replaced_certificate() {
    let ca = TestCa::new();
    let (cert1, key1, der1) = ca.leaf();
    let app = spawn_tls_app(&cert1, &key1).await;

    // A client with only our CA as root verifies the chain and the name.
    let early = ca.client();
    let resp = early.get(format!("{}/healthz", app.https)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(served_cert(&resp), der1);
    assert_eq!(resp.version(), reqwest::Version::HTTP_2, "ALPN offers h2");
    assert_eq!(
        resp.headers()["strict-transport-security"],
        "max-age=63072000; includeSubDomains"
    );

    // New files: the watcher picks them up without a restart.
    let (cert2, key2, der2) = ca.leaf();
    replace(&app.key_path, &key2);
    replace(&app.cert_path, &cert2);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let resp = ca
            .client()
            .get(format!("{}/healthz", app.https))
            .send()
            .await
            .unwrap();
        if served_cert(&resp) == der2 {
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
        served_cert(&resp),
        der1,
        "same connection, still the first certificate"
    );

    // A corrupt certificate and then a key from another pair: both refused,
    // the second certificate stays.
    replace(&app.cert_path, "-----BEGIN CERTIFICATE-----\nnot base64\n");
    assert!(!app.files.reload_if_changed());
    let (_, other_key, _) = ca.leaf();
    replace(&app.cert_path, &cert2);
    replace(&app.key_path, &other_key);
    assert!(!app.files.reload_if_changed());
    let resp = ca
        .client()
        .get(format!("{}/healthz", app.https))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(served_cert(&resp), der2);
}

#[tokio::test]
async fn the_redirect_listener_answers_308_to_https_only() {
    let ca = TestCa::new();
    let (cert, key, _) = ca.leaf();
    let app = spawn_tls_app(&cert, &key).await;
    let https_port = app.https.rsplit(':').next().unwrap();
    let client = ca.client();

    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let resp = client
            .request(method, format!("{}/api/v1/notes?limit=5", app.redirect))
            .header("host", "Notes.Example.org")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            resp.headers()["location"],
            format!("https://notes.example.org:{https_port}/api/v1/notes?limit=5").as_str()
        );
        assert!(resp.headers().get("strict-transport-security").is_none());
        assert!(resp.text().await.unwrap().is_empty(), "nothing but the redirect");
    }
    // A Host that is not a plain name gets no redirect anywhere.
    let resp = client
        .get(format!("{}/", app.redirect))
        .header("host", "evil.example@notes.example.org")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
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
    let (cert, key, _) = ca.leaf();
    let app = spawn_tls_app(&cert, &key).await;
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
    let settings = Settings::from_args([
        "--data-dir",
        dir.path().join("data").to_str().unwrap(),
        "--tls",
        "files",
        "--tls-cert",
        cert_path.to_str().unwrap(),
        "--tls-key",
        key_path.to_str().unwrap(),
    ])
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = Application::build(settings, listener).await.err().unwrap();
    assert!(err.to_string().contains("cert.pem"), "{err}");
}
