//! Throwaway certificates for HTTPS tests (shared by the `api` and `cli`
//! test crates through `#[path]`).

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};

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
