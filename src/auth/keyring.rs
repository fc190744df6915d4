//! The ring of Ed25519 keys that sign access tokens.
//!
//! Keys live in `keyring.json` in the data directory, apart from the
//! database, sealed whole with the master key (see [`crate::masterkey`]):
//! neither a copied database nor a copied data directory can mint tokens.
//! The ring also holds the other secrets: the refresh-rotation secret, the
//! audit log's MAC key and the data key that seals notes at rest (see
//! [`crate::seal`]). The file is created with mode 0600 and written
//! atomically (temporary file, fsync, rename), and a file that others can
//! read is refused at start. A ring written in plain by an older notesd is
//! sealed at the first start. The newest signing key signs; every key in
//! the ring verifies, so a rotation keeps old tokens valid until they
//! expire.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use base64ct::Encoding;
use pasetors::keys::{AsymmetricKeyPair, AsymmetricPublicKey, AsymmetricSecretKey, Generate};
use pasetors::paserk::{FormatAsPaserk, Id};
use pasetors::version4::V4;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::masterkey::{MasterKey, MasterKeyError, MasterKeys};

pub const KEYRING_FILE: &str = "keyring.json";

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("key ring file {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("key ring file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: String, mode: u32 },
    #[error("key ring file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error(transparent)]
    MasterKey(#[from] MasterKeyError),
    #[error(
        "key ring file {path} does not open with master key {id}: the key is wrong or the file was altered"
    )]
    DoesNotOpen { path: String, id: String },
}

/// One signing key with its PASERK forms.
pub struct SigningKey {
    /// PASERK `k4.pid` of the public key; the token footer's `kid`.
    pub id: String,
    pub secret: AsymmetricSecretKey<V4>,
    pub public: AsymmetricPublicKey<V4>,
    /// PASERK `k4.public`, for `GET /api/v1/auth/keys`.
    pub public_paserk: String,
    pub created_at: OffsetDateTime,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("id", &self.id)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct StoredKey {
    /// PASERK `k4.secret`.
    secret: String,
    #[serde(with = "time::serde::rfc3339")]
    created_at: OffsetDateTime,
}

#[derive(Serialize, Deserialize)]
struct StoredRing {
    keys: Vec<StoredKey>,
    /// Base64 of the 32-byte secret that derives each rotated refresh token
    /// from the one it replaces (see `auth::sessions`). Rings written
    /// before it existed get one at the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rotation_secret: Option<String>,
    /// Base64 of the 32-byte key that chains the audit log's records (see
    /// `crate::audit`); added at the next start to rings without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    audit_key: Option<String>,
    /// Base64 of the 32-byte key that seals data at rest; added to rings
    /// without one when their database is sealed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_key: Option<String>,
}

/// `keyring.json` as written: the ring, sealed.
#[derive(Serialize, Deserialize)]
struct SealedFile {
    format: String,
    /// Id of the master key that sealed it.
    master_key: String,
    /// Base64 of the sealed JSON of a [`StoredRing`].
    sealed: String,
}

const SEALED_FORMAT: &str = "notesd-keyring-sealed-1";

fn keyring_ad(master_id: &str) -> Vec<u8> {
    [b"notesd keyring ".as_slice(), master_id.as_bytes()].concat()
}

pub struct KeyRing {
    /// Oldest first; the last one signs.
    keys: Vec<SigningKey>,
    rotation_secret: [u8; 32],
    audit_key: [u8; 32],
    data_key: [u8; 32],
    /// The master key the file is sealed with when saved.
    master: ([u8; 32], String),
}

/// What the key ring file says about itself, read without opening it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RingFile {
    Missing,
    /// Written in plain by a notesd before encryption at rest.
    Plain,
    /// Sealed with the master key of this id.
    SealedWith(String),
}

/// What the ring file in `dir` is.
pub fn ring_file(dir: &Path) -> Result<RingFile, KeyringError> {
    let path = dir.join(KEYRING_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RingFile::Missing),
        Err(source) => {
            return Err(KeyringError::Io {
                path: path.display().to_string(),
                source,
            });
        }
    };
    Ok(match serde_json::from_str::<SealedFile>(&text) {
        Ok(file) => RingFile::SealedWith(file.master_key),
        Err(_) => RingFile::Plain,
    })
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyRing")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl KeyRing {
    /// Loads the ring from `dir`, creating it with fresh keys on first
    /// start; sealed with `masters`' current key. A ring sealed with an
    /// older master key still in `masters`, or written in plain, is sealed
    /// again with the current one.
    pub fn load_or_create(dir: &Path, masters: &MasterKeys) -> Result<Self, KeyringError> {
        let path = dir.join(KEYRING_FILE);
        let shown = path.display().to_string();
        let io = |source| KeyringError::Io {
            path: shown.clone(),
            source,
        };
        let current = masters.current();
        match fs::metadata(&path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(KeyringError::TooOpen { path: shown, mode });
                }
                let text = fs::read_to_string(&path).map_err(io)?;
                let (stored, sealed_with) = Self::unseal(&text, masters, &shown)?;
                let (ring, complete) =
                    Self::parse(stored, current).map_err(|reason| KeyringError::Malformed {
                        path: shown.clone(),
                        reason,
                    })?;
                let resealed = sealed_with.as_deref() != Some(current.id());
                if !complete || resealed {
                    ring.save(dir)?;
                    match sealed_with {
                        None => tracing::info!(
                            master_key = current.id(),
                            "sealed the key ring, written in plain before, with the master key"
                        ),
                        Some(old) if old != current.id() => {
                            tracing::info!(master_key = current.id(), previous = %old, "sealed the key ring with the current master key");
                        }
                        Some(_) => tracing::info!("added the secrets it lacked to the key ring"),
                    }
                }
                Ok(ring)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let malformed = |reason| KeyringError::Malformed {
                    path: shown.clone(),
                    reason,
                };
                let ring = Self {
                    keys: vec![generate_key(OffsetDateTime::now_utc()).map_err(malformed)?],
                    rotation_secret: random_secret().map_err(&malformed)?,
                    audit_key: random_secret().map_err(&malformed)?,
                    data_key: random_secret().map_err(malformed)?,
                    master: (*current.key(), current.id().to_owned()),
                };
                ring.save(dir)?;
                tracing::info!(kid = %ring.current().id, master_key = current.id(), "created the key ring (token signing key, data key), sealed with the master key");
                Ok(ring)
            }
            Err(e) => Err(io(e)),
        }
    }

    /// The stored ring in `text`, and the id of the master key that sealed
    /// it (`None`: written in plain).
    fn unseal(
        text: &str,
        masters: &MasterKeys,
        shown: &str,
    ) -> Result<(StoredRing, Option<String>), KeyringError> {
        let malformed = |reason: String| KeyringError::Malformed {
            path: shown.to_owned(),
            reason,
        };
        let Ok(file) = serde_json::from_str::<SealedFile>(text) else {
            let stored: StoredRing = serde_json::from_str(text).map_err(|e| malformed(e.to_string()))?;
            return Ok((stored, None));
        };
        if file.format != SEALED_FORMAT {
            return Err(malformed(format!("unknown format {:?}", file.format)));
        }
        let Some(master) = masters.find(&file.master_key) else {
            return Err(MasterKeyError::Wrong {
                path: masters.path().display().to_string(),
                have: masters.ids().join(", "),
                sealed_with: file.master_key,
            }
            .into());
        };
        let sealed = base64ct::Base64::decode_vec(&file.sealed)
            .map_err(|_| malformed("the sealed ring is not base64".into()))?;
        let plain = crate::seal::open(master.key(), &keyring_ad(master.id()), &sealed).map_err(|_| {
            KeyringError::DoesNotOpen {
                path: shown.to_owned(),
                id: master.id().to_owned(),
            }
        })?;
        let stored = serde_json::from_slice(&plain).map_err(|e| malformed(e.to_string()))?;
        Ok((stored, Some(file.master_key)))
    }

    /// The ring, and whether the file had everything (else it is saved
    /// again with what was added).
    fn parse(stored: StoredRing, master: &MasterKey) -> Result<(Self, bool), String> {
        let keys = stored
            .keys
            .into_iter()
            .map(|k| {
                let secret = AsymmetricSecretKey::<V4>::try_from(k.secret.as_str())
                    .map_err(|_| "a secret key is not a PASERK k4.secret".to_owned())?;
                from_secret(secret, k.created_at)
            })
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err("no keys".into());
        }
        let rotation = decode_secret(stored.rotation_secret.as_deref(), "rotation secret")?;
        let audit = decode_secret(stored.audit_key.as_deref(), "audit key")?;
        let data = decode_secret(stored.data_key.as_deref(), "data key")?;
        let complete = rotation.is_some() && audit.is_some() && data.is_some();
        Ok((
            Self {
                keys,
                rotation_secret: rotation.map_or_else(random_secret, Ok)?,
                audit_key: audit.map_or_else(random_secret, Ok)?,
                data_key: data.map_or_else(random_secret, Ok)?,
                master: (*master.key(), master.id().to_owned()),
            },
            complete,
        ))
    }

    /// Seals the ring with `master` from the next save on.
    pub fn seal_with(&mut self, master: &MasterKey) {
        self.master = (*master.key(), master.id().to_owned());
    }

    /// The id of the master key the ring is sealed with.
    pub fn master_key_id(&self) -> &str {
        &self.master.1
    }

    /// The key that seals data at rest.
    pub fn data_key(&self) -> &[u8; 32] {
        &self.data_key
    }

    /// The key that chains the audit log's records.
    pub fn audit_key(&self) -> &[u8; 32] {
        &self.audit_key
    }

    /// The secret that derives rotated refresh tokens.
    pub fn rotation_secret(&self) -> &[u8; 32] {
        &self.rotation_secret
    }

    /// Writes the ring, sealed, atomically with mode 0600.
    pub fn save(&self, dir: &Path) -> Result<(), KeyringError> {
        let path = dir.join(KEYRING_FILE);
        let io = |source| KeyringError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut keys = Vec::with_capacity(self.keys.len());
        for k in &self.keys {
            let mut secret = String::new();
            k.secret
                .fmt(&mut secret)
                .map_err(|_| io(std::io::Error::other("PASERK encoding")))?;
            keys.push(StoredKey {
                secret,
                created_at: k.created_at,
            });
        }
        let stored = StoredRing {
            keys,
            rotation_secret: Some(base64ct::Base64::encode_string(&self.rotation_secret)),
            audit_key: Some(base64ct::Base64::encode_string(&self.audit_key)),
            data_key: Some(base64ct::Base64::encode_string(&self.data_key)),
        };
        let plain = serde_json::to_vec(&stored).map_err(|e| io(e.into()))?;
        let (master_key, master_id) = &self.master;
        let sealed = crate::seal::seal(master_key, &keyring_ad(master_id), &plain)
            .map_err(|e| io(std::io::Error::other(e.to_string())))?;
        let file = SealedFile {
            format: SEALED_FORMAT.to_owned(),
            master_key: master_id.clone(),
            sealed: base64ct::Base64::encode_string(&sealed),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(|e| io(e.into()))?;
        crate::fsutil::write_private(dir, KEYRING_FILE, &json).map_err(io)
    }

    /// The key that signs new tokens.
    pub fn current(&self) -> &SigningKey {
        // The ring is never empty: `parse` and `load_or_create` ensure it.
        &self.keys[self.keys.len() - 1]
    }

    pub fn find(&self, kid: &str) -> Option<&SigningKey> {
        self.keys.iter().find(|k| k.id == kid)
    }

    pub fn keys(&self) -> &[SigningKey] {
        &self.keys
    }

    /// Adds a new signing key (used by rotation).
    pub fn rotate(&mut self, now: OffsetDateTime) -> Result<&SigningKey, String> {
        self.keys.push(generate_key(now)?);
        Ok(self.current())
    }

    /// Undoes a rotation that could not be saved.
    pub fn drop_newest(&mut self) {
        if self.keys.len() > 1 {
            self.keys.pop();
        }
    }

    /// Drops the keys that stopped signing more than `token_life` ago:
    /// every token they signed has expired. A key stopped signing when the
    /// next one was made. Returns the ids dropped.
    pub fn prune(&mut self, now: OffsetDateTime, token_life: std::time::Duration) -> Vec<String> {
        let live = self.live(now, token_life);
        let mut dropped = Vec::new();
        let mut index = 0;
        self.keys.retain(|key| {
            let keep = live[index];
            index += 1;
            if !keep {
                dropped.push(key.id.clone());
            }
            keep
        });
        dropped
    }

    /// For each key, whether a token it signed may still be unexpired at
    /// `now`: it signs, or it stopped signing (when the next key was made)
    /// less than `token_life` ago.
    fn live(&self, now: OffsetDateTime, token_life: std::time::Duration) -> Vec<bool> {
        (0..self.keys.len())
            .map(|i| {
                self.keys
                    .get(i + 1)
                    .is_none_or(|next| next.created_at + token_life > now)
            })
            .collect()
    }

    /// The keys that may have signed a token still unexpired at `now`.
    pub fn live_keys(&self, now: OffsetDateTime, token_life: std::time::Duration) -> Vec<&SigningKey> {
        let live = self.live(now, token_life);
        self.keys
            .iter()
            .zip(live)
            .filter(|(_, l)| *l)
            .map(|(k, _)| k)
            .collect()
    }
}

/// A stored 32-byte secret, if the ring has it.
fn decode_secret(b64: Option<&str>, what: &str) -> Result<Option<[u8; 32]>, String> {
    let Some(b64) = b64 else {
        return Ok(None);
    };
    let mut secret = [0u8; 32];
    let decoded =
        base64ct::Base64::decode(b64, &mut secret).map_err(|_| format!("the {what} is not base64"))?;
    if decoded.len() != 32 {
        return Err(format!("the {what} is not 32 bytes"));
    }
    Ok(Some(secret))
}

fn random_secret() -> Result<[u8; 32], String> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| e.to_string())?;
    Ok(secret)
}

fn generate_key(now: OffsetDateTime) -> Result<SigningKey, String> {
    let pair = AsymmetricKeyPair::<V4>::generate().map_err(|e| e.to_string())?;
    from_secret(pair.secret, now)
}

fn from_secret(secret: AsymmetricSecretKey<V4>, created_at: OffsetDateTime) -> Result<SigningKey, String> {
    let public = AsymmetricPublicKey::<V4>::try_from(&secret).map_err(|e| e.to_string())?;
    let mut id = String::new();
    Id::from(&public).fmt(&mut id).map_err(|e| e.to_string())?;
    let mut public_paserk = String::new();
    public.fmt(&mut public_paserk).map_err(|e| e.to_string())?;
    Ok(SigningKey {
        id,
        secret,
        public,
        public_paserk,
        created_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masters(dir: &Path) -> MasterKeys {
        MasterKeys::create(&dir.join("master.key")).unwrap()
    }

    #[test]
    fn ring_is_created_private_and_reloads_the_same_keys() {
        let dir = tempfile::tempdir().unwrap();
        let keys = masters(dir.path());
        fs::create_dir(dir.path().join("data")).unwrap();
        let ring = KeyRing::load_or_create(&dir.path().join("data"), &keys).unwrap();
        let mode = fs::metadata(dir.path().join("data").join(KEYRING_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(ring.current().id.starts_with("k4.pid."));
        assert!(ring.current().public_paserk.starts_with("k4.public."));
        let again = KeyRing::load_or_create(&dir.path().join("data"), &keys).unwrap();
        assert_eq!(again.current().id, ring.current().id);
    }

    #[test]
    fn a_ring_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = masters(dir.path());
        fs::create_dir(dir.path().join("data")).unwrap();
        KeyRing::load_or_create(&dir.path().join("data"), &keys).unwrap();
        let path = dir.path().join("data").join(KEYRING_FILE);
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            KeyRing::load_or_create(&dir.path().join("data"), &keys),
            Err(KeyringError::TooOpen { .. })
        ));
    }

    #[test]
    fn a_retired_key_drops_out_once_its_tokens_have_expired() {
        let dir = tempfile::tempdir().unwrap();
        let keys = masters(dir.path());
        fs::create_dir(dir.path().join("data")).unwrap();
        let mut ring = KeyRing::load_or_create(&dir.path().join("data"), &keys).unwrap();
        let first = ring.current().id.clone();
        let start = ring.current().created_at;
        let life = std::time::Duration::from_secs(900);
        ring.rotate(start + time::Duration::minutes(1)).unwrap();
        assert!(
            ring.prune(start + time::Duration::minutes(15), life).is_empty(),
            "tokens may live"
        );
        assert!(ring.find(&first).is_some());
        assert_eq!(
            ring.prune(start + time::Duration::minutes(17), life),
            std::slice::from_ref(&first)
        );
        assert!(ring.find(&first).is_none());
        assert_eq!(ring.keys().len(), 1, "the signing key always stays");
        assert!(ring.prune(start + time::Duration::days(999), life).is_empty());
    }

    #[test]
    fn rotation_keeps_old_keys_for_verification() {
        let dir = tempfile::tempdir().unwrap();
        let keys = masters(dir.path());
        fs::create_dir(dir.path().join("data")).unwrap();
        let mut ring = KeyRing::load_or_create(&dir.path().join("data"), &keys).unwrap();
        let first = ring.current().id.clone();
        ring.rotate(OffsetDateTime::now_utc()).unwrap();
        ring.save(&dir.path().join("data")).unwrap();
        let ring = KeyRing::load_or_create(&dir.path().join("data"), &keys).unwrap();
        assert_ne!(ring.current().id, first);
        assert!(ring.find(&first).is_some());
    }

    #[test]
    fn the_file_is_sealed_and_opens_only_with_its_master_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = masters(dir.path());
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let ring = KeyRing::load_or_create(&data, &keys).unwrap();
        let text = fs::read_to_string(data.join(KEYRING_FILE)).unwrap();
        assert!(!text.contains("k4.secret"), "no signing key in plain");
        assert!(!text.contains(&base64ct::Base64::encode_string(ring.data_key())));
        assert_eq!(
            ring_file(&data).unwrap(),
            RingFile::SealedWith(keys.current().id().to_owned())
        );
        let other = MasterKeys::create(&dir.path().join("other.key")).unwrap();
        assert!(matches!(
            KeyRing::load_or_create(&data, &other),
            Err(KeyringError::MasterKey(MasterKeyError::Wrong { .. }))
        ));
    }

    #[test]
    fn a_plain_ring_from_an_older_notesd_is_sealed_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let keys = masters(dir.path());
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let pair = AsymmetricKeyPair::<V4>::generate().unwrap();
        let mut secret = String::new();
        pair.secret.fmt(&mut secret).unwrap();
        let plain = serde_json::json!({"keys": [{"secret": secret, "created_at": "2026-01-01T00:00:00Z"}]});
        crate::fsutil::write_private(&data, KEYRING_FILE, plain.to_string().as_bytes()).unwrap();
        assert_eq!(ring_file(&data).unwrap(), RingFile::Plain);
        let ring = KeyRing::load_or_create(&data, &keys).unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert!(
            !fs::read_to_string(data.join(KEYRING_FILE))
                .unwrap()
                .contains(&secret)
        );
        let again = KeyRing::load_or_create(&data, &keys).unwrap();
        assert_eq!(again.current().id, ring.current().id);
        assert_eq!(again.data_key(), ring.data_key());
    }

    #[test]
    fn a_ring_sealed_with_a_rotated_out_key_is_sealed_again_with_the_current_one() {
        let dir = tempfile::tempdir().unwrap();
        let mut keys = masters(dir.path());
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        let ring = KeyRing::load_or_create(&data, &keys).unwrap();
        keys.add_new().unwrap();
        let again = KeyRing::load_or_create(&data, &keys).unwrap();
        assert_eq!(again.data_key(), ring.data_key());
        assert_eq!(
            ring_file(&data).unwrap(),
            RingFile::SealedWith(keys.current().id().to_owned())
        );
    }
}
