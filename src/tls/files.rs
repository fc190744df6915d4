//! `--tls files`: a certificate chain and key read from PEM files, re-read
//! when either file changes (checked every `--tls-reload-interval`) or on
//! SIGHUP. A replacement that does not load (unreadable, not PEM, key not
//! matching the certificate) is logged and the current certificate stays.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

fn stamp(path: &Path) -> Option<FileStamp> {
    use std::os::unix::fs::MetadataExt;
    // `metadata` follows symbolic links, so a link switched to a new
    // target (as certbot and Kubernetes do) counts as a change.
    let meta = fs::metadata(path).ok()?;
    Some(FileStamp {
        modified: meta.modified().ok(),
        len: meta.len(),
        inode: meta.ino(),
    })
}

/// The certificate being served and where it comes from.
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// Stamps of the files last tried, loaded or not, so a broken file is
    /// reported once rather than at every check.
    tried: Mutex<Option<(FileStamp, FileStamp)>>,
}

impl fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFiles")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

impl CertFiles {
    /// Loads the files; at start-up a certificate that does not load is an
    /// error, not something to serve around.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let stamps = stamp(cert_path).zip(stamp(key_path));
        let key = load_pair(cert_path, key_path)?;
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            tried: Mutex::new(stamps),
        })
    }

    /// Reloads if either file changed since the last attempt. Returns
    /// whether a new certificate is now served.
    pub fn reload_if_changed(&self) -> bool {
        let stamps = stamp(&self.cert_path).zip(stamp(&self.key_path));
        {
            let mut tried = self.tried.lock().unwrap_or_else(PoisonError::into_inner);
            if *tried == stamps {
                return false;
            }
            tried.clone_from(&stamps);
        }
        self.reload()
    }

    /// Reads both files again (SIGHUP). Returns whether a new certificate
    /// is now served.
    pub fn reload(&self) -> bool {
        match load_pair(&self.cert_path, &self.key_path) {
            Ok(key) => {
                *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one");
                false
            }
        }
    }

    /// Checks the files every `interval` until the returned task is aborted.
    pub fn watch(self: &Arc<Self>, interval: Duration) -> tokio::task::JoinHandle<()> {
        let files = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            tick.tick().await;
            loop {
                tick.tick().await;
                let files = files.clone();
                // File system calls block; keep them off the request threads.
                let _ = tokio::task::spawn_blocking(move || files.reload_if_changed()).await;
            }
        })
    }

    /// The chain currently served (for tests and diagnostics).
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl ResolvesServerCert for CertFiles {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, String> {
    let certs = CertificateDer::pem_file_iter(cert_path)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    if certs.is_empty() {
        return Err(format!("{}: no certificate in the file", cert_path.display()));
    }
    // The error names the file only: rustls-pki-types' messages never
    // include key material, but there is no reason to risk it.
    let key = PrivateKeyDer::from_pem_file(key_path)
        .map_err(|_| format!("{}: no readable PEM private key", key_path.display()))?;
    let summary = describe(&certs[0]);
    let key = CertifiedKey::from_der(certs, key, &super::provider())
        .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))?;
    if let Some((names, not_after)) = summary {
        if not_after < SystemTime::now() {
            tracing::warn!(names, "the TLS certificate loaded has expired");
        }
        let expires = humantime::format_rfc3339_seconds(not_after).to_string();
        tracing::info!(names, expires, "TLS certificate loaded");
    } else {
        tracing::warn!("TLS certificate loaded, but its names and dates could not be read");
    }
    Ok(key)
}

/// Subject alternative names and end of validity of a certificate.
fn describe(cert: &CertificateDer<'_>) -> Option<(String, SystemTime)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    let not_after = u64::try_from(parsed.validity().not_after.timestamp()).ok()?;
    let names = parsed
        .subject_alternative_name()
        .ok()
        .flatten()
        .map(|san| {
            san.value
                .general_names
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default();
    Some((names, SystemTime::UNIX_EPOCH + Duration::from_secs(not_after)))
}
