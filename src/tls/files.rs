//! `--tls files`: a certificate chain and key read from PEM files, re-read
//! when their contents change (checked every `--tls-reload-interval`) or on
//! SIGHUP. A replacement that does not load (unreadable, not PEM, key not
//! matching the certificate, expired or not yet valid) is logged and the
//! current certificate stays.

use crate::metrics::CertExpiry;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

/// The contents last tried and how that went.
struct Tried {
    /// SHA-256 of both files' contents; `None` if one could not be read.
    digest: Option<[u8; 32]>,
    /// Whether this content is settled: loaded, or its failure reported.
    settled: bool,
}

/// The certificate being served and where it comes from.
pub struct CertFiles {
    cert_path: PathBuf,
    key_path: PathBuf,
    current: RwLock<Arc<CertifiedKey>>,
    /// The host names (and IP literals) the current certificate covers.
    hosts: RwLock<Vec<String>>,
    tried: Mutex<Tried>,
    /// When the certificate served now expires, for the metrics.
    expiry: Arc<CertExpiry>,
}

impl fmt::Debug for CertFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertFiles")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

/// Both files' contents.
struct Pair {
    cert: Vec<u8>,
    key: Vec<u8>,
}

impl Pair {
    fn read(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let cert = fs::read(cert_path).map_err(|e| format!("{}: {e}", cert_path.display()))?;
        let key = fs::read(key_path).map_err(|e| format!("{}: {e}", key_path.display()))?;
        Ok(Self { cert, key })
    }

    fn digest(&self) -> [u8; 32] {
        let mut hash = Sha256::new();
        hash.update((self.cert.len() as u64).to_be_bytes());
        hash.update(&self.cert);
        hash.update(&self.key);
        hash.finalize().into()
    }
}

impl CertFiles {
    /// Loads the files; at start-up a certificate that does not load is an
    /// error, not something to serve around.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Self, String> {
        let pair = Pair::read(cert_path, key_path)?;
        let (key, validity) = parse(&pair, cert_path, key_path)?;
        if let Some(validity) = &validity {
            if let Err(e) = validity.check() {
                tracing::error!(error = %e, "serving a TLS certificate clients will refuse");
            }
            validity.log();
        }
        let expiry = Arc::new(CertExpiry::default());
        if let Some(leaf) = key.cert.first() {
            expiry.served(leaf);
        }
        Ok(Self {
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            current: RwLock::new(Arc::new(key)),
            hosts: RwLock::new(validity.map(|v| v.hosts).unwrap_or_default()),
            tried: Mutex::new(Tried {
                digest: Some(pair.digest()),
                settled: true,
            }),
            expiry,
        })
    }

    /// When the certificate served now expires.
    pub fn expiry(&self) -> Arc<CertExpiry> {
        self.expiry.clone()
    }

    /// Reloads if the files' contents changed. A replacement that does not
    /// load is tried once more at the next check before it is reported:
    /// tools write the certificate and the key one after the other.
    /// Returns whether a new certificate is now served.
    pub fn reload_if_changed(&self) -> bool {
        let pair = Pair::read(&self.cert_path, &self.key_path);
        let digest = pair.as_ref().ok().map(Pair::digest);
        let mut tried = self.tried.lock().unwrap_or_else(PoisonError::into_inner);
        if tried.digest == digest && tried.settled {
            return false;
        }
        let second_try = tried.digest == digest;
        let outcome = pair.and_then(|pair| self.install(&pair));
        *tried = Tried {
            digest,
            settled: outcome.is_ok() || second_try,
        };
        match outcome {
            Ok(()) => true,
            Err(e) if second_try => {
                tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one");
                false
            }
            Err(e) => {
                tracing::debug!(error = %e, "TLS certificate files changed but do not load yet; trying again");
                false
            }
        }
    }

    /// Reads both files now (SIGHUP) and reports a failure at once.
    /// Returns whether a new certificate is now served.
    pub fn reload(&self) -> bool {
        let pair = Pair::read(&self.cert_path, &self.key_path);
        let digest = pair.as_ref().ok().map(Pair::digest);
        let outcome = pair.and_then(|pair| self.install(&pair));
        *self.tried.lock().unwrap_or_else(PoisonError::into_inner) = Tried {
            digest,
            settled: true,
        };
        match outcome {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "TLS certificate not reloaded; still serving the previous one");
                false
            }
        }
    }

    /// Parses `pair` and, if it is usable, serves it from now on.
    fn install(&self, pair: &Pair) -> Result<(), String> {
        let (key, validity) = parse(pair, &self.cert_path, &self.key_path)?;
        if let Some(validity) = &validity {
            validity.check()?;
            validity.log();
        }
        if let Some(leaf) = key.cert.first() {
            self.expiry.served(leaf);
        }
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(key);
        *self.hosts.write().unwrap_or_else(PoisonError::into_inner) =
            validity.map(|v| v.hosts).unwrap_or_default();
        Ok(())
    }

    /// Whether the certificate served now is valid for `host` (lower-case;
    /// an IPv6 literal in brackets). A wildcard covers one label.
    pub fn covers(&self, host: &str) -> bool {
        let hosts = self.hosts.read().unwrap_or_else(PoisonError::into_inner);
        hosts.iter().any(|name| match name.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => name == host,
        })
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

    /// The chain currently served.
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

fn parse(pair: &Pair, cert_path: &Path, key_path: &Path) -> Result<(CertifiedKey, Option<Validity>), String> {
    let certs = CertificateDer::pem_slice_iter(&pair.cert)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert_path.display()))?;
    let Some(leaf) = certs.first() else {
        return Err(format!("{}: no certificate in the file", cert_path.display()));
    };
    let validity = Validity::of(leaf);
    // The error names the file only: rustls-pki-types' messages never
    // include key material, but there is no reason to risk it.
    let key = PrivateKeyDer::from_pem_slice(&pair.key)
        .map_err(|_| format!("{}: no readable PEM private key", key_path.display()))?;
    let key = CertifiedKey::from_der(certs, key, &super::provider())
        .map_err(|e| format!("{} and {}: {e}", cert_path.display(), key_path.display()))?;
    Ok((key, validity))
}

/// Names and validity period of a leaf certificate.
struct Validity {
    names: String,
    /// DNS names (lower-case) and IP literals, as a `Host` header names them.
    hosts: Vec<String>,
    not_before: SystemTime,
    not_after: SystemTime,
}

impl Validity {
    fn of(cert: &CertificateDer<'_>) -> Option<Self> {
        let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
        let time = |t: x509_parser::time::ASN1Time| {
            u64::try_from(t.timestamp())
                .ok()
                .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
        };
        let general_names = parsed
            .subject_alternative_name()
            .ok()
            .flatten()
            .map(|san| san.value.general_names.clone())
            .unwrap_or_default();
        let names = general_names
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let hosts = general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some(dns.to_ascii_lowercase()),
                x509_parser::extensions::GeneralName::IPAddress(ip) => match ip.len() {
                    4 => <[u8; 4]>::try_from(*ip)
                        .ok()
                        .map(|a| std::net::Ipv4Addr::from(a).to_string()),
                    16 => <[u8; 16]>::try_from(*ip)
                        .ok()
                        .map(|a| format!("[{}]", std::net::Ipv6Addr::from(a))),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        Some(Self {
            names,
            hosts,
            not_before: time(parsed.validity().not_before)?,
            not_after: time(parsed.validity().not_after)?,
        })
    }

    fn check(&self) -> Result<(), String> {
        let now = SystemTime::now();
        if self.not_after < now {
            return Err(format!("the certificate for {} has expired", self.names));
        }
        if self.not_before > now {
            return Err(format!("the certificate for {} is not valid yet", self.names));
        }
        Ok(())
    }

    fn log(&self) {
        let expires = humantime::format_rfc3339_seconds(self.not_after).to_string();
        tracing::info!(names = %self.names, expires, "TLS certificate loaded");
    }
}
