//! `--tls acme`: certificates from an ACME certificate authority through
//! rustls-acme, validated with TLS-ALPN-01 on the TLS port itself, renewed
//! in the background (at two thirds of their life). The account key and the
//! certificates are kept in `<data-dir>/acme` (0700, files 0600, written
//! atomically, sealed with a key from the key ring's data key, so a copy of
//! the data directory holds no usable TLS or ACME key), and a restart
//! serves the cached certificate without asking the CA again. Failed orders are retried with exponential backoff (1 s,
//! 2 s, 4 s … up to 18 h, rustls-acme's schedule) while the current
//! certificate keeps being served.

use crate::metrics::CertExpiry;
use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures_util::StreamExt;
use rustls::{ClientConfig, RootCertStore};
use rustls_acme::{AccountCache, AcmeConfig, CertCache, EventOk};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use sha2::{Digest, Sha256};

use super::Handshake;
use crate::settings::Settings;

/// The cache directory inside the data directory.
pub const ACME_DIR: &str = "acme";

/// A prepared ACME client: call [`Acme::start`] to begin ordering.
pub struct Acme {
    config: AcmeConfig<std::io::Error>,
    expiry: Arc<CertExpiry>,
}

impl Acme {
    /// Checks everything the CA will not: the cache directory and the
    /// extra root certificate. Nothing is sent to the CA yet.
    pub fn prepare(settings: &Settings, cache_key: [u8; 32]) -> Result<Self, String> {
        let dir = settings.storage.data_dir.join(ACME_DIR);
        prepare_cache_dir(&dir)?;
        let directory = settings.acme_directory_url()?;
        let client = client_config(settings.tls.acme_ca_root.as_deref())?;
        let expiry = Arc::new(CertExpiry::default());
        let cache = PrivateDirCache {
            dir,
            expiry: expiry.clone(),
            key: cache_key,
        };
        let mut config = AcmeConfig::new_with_client_config(settings.acme_domains(), client)
            .directory(directory)
            .cache(cache);
        if let Some(email) = &settings.tls.acme_email {
            config = config.contact_push(format!("mailto:{email}"));
        }
        Ok(Self { config, expiry })
    }

    /// When the certificate served now expires (known once one is).
    pub fn expiry(&self) -> Arc<CertExpiry> {
        self.expiry.clone()
    }

    /// Starts the ordering and renewal task (which logs every event) and
    /// returns what the TLS acceptor needs.
    pub fn start(self) -> Result<(Handshake, tokio::task::JoinHandle<()>), String> {
        let mut state = Box::pin(self.config.state());
        let config = super::server_config(state.resolver()).map_err(|e| e.to_string())?;
        let challenge = state.challenge_rustls_config_with_provider(super::provider());
        let task = tokio::spawn(async move {
            while let Some(event) = state.next().await {
                match event {
                    Ok(EventOk::DeployedCachedCert) => {
                        tracing::info!(target: "acme", "serving the cached certificate");
                    }
                    Ok(EventOk::DeployedNewCert) => {
                        tracing::info!(target: "acme", "certificate issued and now served");
                    }
                    Ok(EventOk::CertCacheStore) => tracing::info!(target: "acme", "certificate saved"),
                    Ok(EventOk::AccountCacheStore) => tracing::info!(target: "acme", "ACME account saved"),
                    Err(e) => tracing::error!(
                        target: "acme",
                        error = %e,
                        "ACME step failed; retrying with backoff, the current certificate (if any) is still served"
                    ),
                }
            }
        });
        Ok((
            Handshake {
                config,
                acme_challenge: Some(challenge),
            },
            task,
        ))
    }
}

/// The cache holds the account key and certificate keys: only the owner
/// may enter.
fn prepare_cache_dir(dir: &Path) -> Result<(), String> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(0o700)))
        .map_err(|e| format!("ACME cache {}: {e}", dir.display()))
}

/// Web PKI roots for Let's Encrypt, plus the operator's extra root.
/// Reads `--acme-ca-root` as the start would, without preparing anything.
pub fn check_ca_root(settings: &Settings) -> Result<(), String> {
    client_config(settings.tls.acme_ca_root.as_deref()).map(drop)
}

fn client_config(extra_root: Option<&Path>) -> Result<Arc<ClientConfig>, String> {
    let mut roots = RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    if let Some(path) = extra_root {
        let certs = CertificateDer::pem_file_iter(path)
            .and_then(Iterator::collect::<Result<Vec<_>, _>>)
            .map_err(|e| format!("--acme-ca-root {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "--acme-ca-root {}: no certificate in the file",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("--acme-ca-root {}: {e}", path.display()))?;
        }
    }
    let config = ClientConfig::builder_with_provider(super::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// rustls-acme's own directory cache writes with the process umask and
/// not atomically; this one writes 0600 files whole or not at all.
struct PrivateDirCache {
    dir: PathBuf,
    /// Set from each certificate loaded from or stored in the cache: the
    /// ones rustls-acme goes on to serve.
    expiry: Arc<CertExpiry>,
    /// Seals each file, bound to its name.
    key: [u8; 32],
}

impl PrivateDirCache {
    /// rustls-acme keeps the key and the chain in one PEM file.
    fn note_expiry(&self, pem: &[u8]) {
        if let Some(Ok(leaf)) = rustls_pki_types::CertificateDer::pem_slice_iter(pem).next() {
            self.expiry.served(&leaf);
        }
    }
}

impl PrivateDirCache {
    /// One file per (directory, names): a new domain list or another CA
    /// gets a new certificate, never one issued for something else.
    fn file_name(kind: &str, names: &[String], directory_url: &str) -> String {
        let mut hash = Sha256::new();
        for name in names {
            hash.update(name.as_bytes());
            hash.update([0]);
        }
        hash.update(directory_url.as_bytes());
        let digest = hash.finalize();
        let hex = digest[..16].iter().fold(String::new(), |mut hex, b| {
            use std::fmt::Write;
            let _ = write!(hex, "{b:02x}");
            hex
        });
        format!("{kind}-{hex}")
    }

    async fn read(&self, name: String) -> std::io::Result<Option<Vec<u8>>> {
        let path = self.dir.join(&name);
        let read = tokio::task::spawn_blocking(move || fs::read(path))
            .await
            .map_err(std::io::Error::other)?;
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        if let Ok(plain) = crate::seal::open(&self.key, name.as_bytes(), &bytes) {
            return Ok(Some(plain));
        }
        // Written in plain by a notesd before encryption at rest (PEM, or
        // the account's JSON): used, and sealed again.
        if bytes.starts_with(b"-----BEGIN") || bytes.starts_with(b"{") || bytes.starts_with(b"[") {
            self.write(name, &bytes).await?;
            tracing::info!(target: "acme", "sealed a cache file written in plain before");
            return Ok(Some(bytes));
        }
        // Sealed with another key ring: as if absent (a new order).
        tracing::warn!(target: "acme", "a cache file does not open with this key ring; ignored");
        Ok(None)
    }

    async fn write(&self, name: String, bytes: &[u8]) -> std::io::Result<()> {
        let dir = self.dir.clone();
        let bytes = crate::seal::seal(&self.key, name.as_bytes(), bytes).map_err(std::io::Error::other)?;
        tokio::task::spawn_blocking(move || crate::fsutil::write_private(&dir, &name, &bytes))
            .await
            .map_err(std::io::Error::other)?
    }
}

#[async_trait::async_trait]
impl CertCache for PrivateDirCache {
    type EC = std::io::Error;

    async fn load_cert(&self, domains: &[String], directory_url: &str) -> Result<Option<Vec<u8>>, Self::EC> {
        let cert = self.read(Self::file_name("cert", domains, directory_url)).await?;
        if let Some(pem) = &cert {
            self.note_expiry(pem);
        }
        Ok(cert)
    }

    async fn store_cert(&self, domains: &[String], directory_url: &str, cert: &[u8]) -> Result<(), Self::EC> {
        self.write(Self::file_name("cert", domains, directory_url), cert)
            .await?;
        self.note_expiry(cert);
        Ok(())
    }
}

#[async_trait::async_trait]
impl AccountCache for PrivateDirCache {
    type EA = std::io::Error;

    async fn load_account(
        &self,
        contact: &[String],
        directory_url: &str,
    ) -> Result<Option<Vec<u8>>, Self::EA> {
        self.read(Self::file_name("account", contact, directory_url))
            .await
    }

    async fn store_account(
        &self,
        contact: &[String],
        directory_url: &str,
        account: &[u8],
    ) -> Result<(), Self::EA> {
        self.write(Self::file_name("account", contact, directory_url), account)
            .await
    }
}
