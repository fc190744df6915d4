//! `notesd serve --tls acme` against Debian's `pebble` ACME test server on
//! loopback, with real TLS-ALPN-01 validation: `pebble-challtestsrv`
//! answers pebble's DNS queries for the test domain with 127.0.0.1, and
//! pebble's validation connects to notesd's own TLS port.
//!
//! `.ci/run` installs pebble with apt-get. Without it, this test fails in
//! CI and skips loudly elsewhere.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::Server;
use super::certs::{TestCa, client_trusting, peer_cert};

const DOMAIN: &str = "notes.test";

/// A port free at the time of asking (pebble's configuration needs the
/// TLS port before notesd starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} after 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child process when dropped.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Pebble and its DNS server, with a throwaway CA for pebble's own API.
struct Pebble {
    directory: String,
    management: u16,
    api_ca_pem: String,
    _dns: Daemon,
    _acme_server: Daemon,
}

impl Pebble {
    fn start(dir: &Path, tls_port: u16) -> Pebble {
        // Pebble's API needs a certificate; the test makes one.
        let ca = TestCa::new();
        let leaf = ca.leaf();
        std::fs::write(dir.join("pebble-cert.pem"), &leaf.cert_pem).unwrap();
        std::fs::write(dir.join("pebble-key.pem"), &leaf.key_pem).unwrap();

        let (api, management, dns, dns_management) = (free_port(), free_port(), free_port(), free_port());
        let config = serde_json::json!({
            "pebble": {
                "listenAddress": format!("127.0.0.1:{api}"),
                "managementListenAddress": format!("127.0.0.1:{management}"),
                "certificate": dir.join("pebble-cert.pem"),
                "privateKey": dir.join("pebble-key.pem"),
                "httpPort": 5002,
                "tlsPort": tls_port,
                "ocspResponderURL": "",
                "externalAccountBindingRequired": false
            }
        });
        std::fs::write(dir.join("pebble.json"), config.to_string()).unwrap();

        let dns_daemon = Daemon(
            Command::new("pebble-challtestsrv")
                .args(["-dns01", &format!("127.0.0.1:{dns}")])
                .args(["-management", &format!("127.0.0.1:{dns_management}")])
                .args(["-http01", "", "-https01", "", "-tlsalpn01", ""])
                .args(["-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
        // Its log goes to a file: the port probes below look like failed
        // handshakes to pebble.
        let log = std::fs::File::create(dir.join("pebble.log")).unwrap();
        let pebble = Daemon(
            Command::new("pebble")
                .arg("-config")
                .arg(dir.join("pebble.json"))
                .args(["-dnsserver", &format!("127.0.0.1:{dns}")])
                // No random sleep before validating, no deliberate nonce
                // rejections: the test measures notesd, not pebble's chaos.
                .env("PEBBLE_VA_NOSLEEP", "1")
                .env("PEBBLE_WFE_NONCEREJECT", "0")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .unwrap(),
        );
        wait_for_port(api);
        wait_for_port(management);
        wait_for_port(dns_management);
        Pebble {
            directory: format!("https://127.0.0.1:{api}/dir"),
            management,
            api_ca_pem: ca.pem(),
            _dns: dns_daemon,
            _acme_server: pebble,
        }
    }

    /// The root pebble issues under (a new one at every pebble start), PEM.
    async fn issuing_root(&self) -> String {
        client_trusting(&self.api_ca_pem)
            .build()
            .unwrap()
            .get(format!("https://127.0.0.1:{}/roots/0", self.management))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// GET /healthz over HTTPS for the test domain, verified against pebble's
/// root only; returns the leaf certificate served.
async fn https_healthz(root_pem: &str, addr: SocketAddr) -> Vec<u8> {
    let client = client_trusting(root_pem).resolve(DOMAIN, addr).build().unwrap();
    let resp = client
        .get(format!("https://{DOMAIN}:{}/healthz", addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("strict-transport-security"));
    peer_cert(&resp)
}

#[tokio::test(flavor = "multi_thread")]
async fn acme_mode_gets_a_certificate_from_pebble_and_reuses_it_after_a_restart() {
    if Command::new("pebble").arg("-h").output().is_err() {
        assert!(
            !super::tools_required(),
            "make test installs pebble (scripts/test-deps.sh)"
        );
        eprintln!(
            "\n!!! SKIPPED acme_mode_gets_a_certificate_from_pebble…: `pebble` is missing (apt-get install pebble)\n"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let pebble = Pebble::start(dir.path(), port);
    std::fs::write(dir.path().join("pebble-api-ca.pem"), &pebble.api_ca_pem).unwrap();
    let data = dir.path().join("data");
    let listen = format!("127.0.0.1:{port}");
    let ca_root = dir.path().join("pebble-api-ca.pem");
    let args = [
        "--listen",
        listen.as_str(),
        "--tls",
        "acme",
        "--acme-domain",
        DOMAIN,
        "--acme-email",
        "ops@notes.test",
        "--acme-directory",
        pebble.directory.as_str(),
        "--acme-ca-root",
        ca_root.to_str().unwrap(),
    ];

    let started = Instant::now();
    let mut server = Server::start_with(&data, &args, &[]);
    assert!(
        server.wait_for("answered a TLS-ALPN-01 validation").is_some(),
        "pebble validated through notesd's TLS port"
    );
    assert!(
        server.wait_for("certificate issued").is_some(),
        "no certificate from pebble within 30 s"
    );
    eprintln!("first certificate after {:.2} s", started.elapsed().as_secs_f64());
    let root = pebble.issuing_root().await;
    let addr: SocketAddr = listen.parse().unwrap();
    let first = https_healthz(&root, addr).await;

    // The account key and certificate are private.
    let cache = data.join("acme");
    assert_eq!(
        std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
        0o700
    );
    for entry in std::fs::read_dir(&cache).unwrap() {
        let meta = entry.unwrap().metadata().unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    // Stop only once the certificate is on disk; sealed, like the account.
    assert!(server.wait_for("certificate saved").is_some());
    for entry in std::fs::read_dir(&cache).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(
            !bytes.windows(11).any(|w| w == b"PRIVATE KEY") && !bytes.starts_with(b"-----"),
            "an ACME cache file holds a key in plain"
        );
    }
    assert!(server.terminate().success());

    // A second start serves the cached certificate without a new order.
    let server = Server::start_with(&data, &args, &[]);
    let line = server
        .wait_for(r#""target":"acme""#)
        .expect("an ACME log line at the second start");
    assert!(line.contains("serving the cached certificate"), "{line}");
    assert_eq!(
        https_healthz(&root, addr).await,
        first,
        "the same certificate, not a new one"
    );
}
