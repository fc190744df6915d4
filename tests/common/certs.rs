//! Throwaway certificates for HTTPS tests, and clients that trust only
//! them (shared by the `api` and `cli` test crates through `#[path]`).

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use reqwest::tls::TlsInfo;

/// A client builder that trusts `root_pem` alone and reports the
/// certificate each response came over (see [`peer_cert`]).
pub fn client_trusting(root_pem: &str) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(root_pem.as_bytes()).unwrap())
        .tls_info(true)
}

/// The leaf certificate (DER) a response came over.
pub fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<TlsInfo>()
        .and_then(TlsInfo::peer_certificate)
        .unwrap()
        .to_vec()
}

/// A certificate authority that lives as long as one test.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate: PEM chain (leaf only), PEM key, and the leaf's DER.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `localhost` and `127.0.0.1`.
    pub fn leaf(&self) -> Leaf {
        self.leaf_with(|_| {})
    }

    /// As [`TestCa::leaf`], with `adjust` applied to its parameters.
    #[allow(dead_code)] // not every test crate uses it
    pub fn leaf_with(&self, adjust: impl FnOnce(&mut CertificateParams)) -> Leaf {
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        adjust(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}
