//! `--tls files` in the real binary: SIGHUP reloads the certificate.

use std::time::{Duration, Instant};

use super::Server;
use super::certs::{TestCa, client_trusting, peer_cert};

async fn served_cert(ca: &TestCa, addr: &str) -> Vec<u8> {
    let client = client_trusting(&ca.pem()).build().unwrap();
    let resp = client
        .get(format!("https://{addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    peer_cert(&resp)
}

#[tokio::test]
async fn sighup_reloads_the_certificate_files() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new();
    let first = ca.leaf();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    // Checking the files hourly: only the signal can explain a change.
    let mut server = Server::start_with(
        &dir.path().join("data"),
        &[
            "--listen",
            "127.0.0.1:0",
            "--tls",
            "files",
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
            "--tls-reload-interval",
            "1h",
        ],
        &[],
    );
    let addr = server.address();
    assert_eq!(served_cert(&ca, &addr).await, first.der);

    let second = ca.leaf();
    std::fs::write(&cert, &second.cert_pem).unwrap();
    std::fs::write(&key, &second.key_pem).unwrap();
    let pid = server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-HUP", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert!(server.wait_for("TLS certificate loaded").is_some());
    let deadline = Instant::now() + Duration::from_secs(10);
    while served_cert(&ca, &addr).await != second.der {
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not bring the new certificate"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        server.child.try_wait().unwrap().is_none(),
        "SIGHUP did not stop the server"
    );
}
