//! The master key file: the one secret kept apart from the data directory.
//!
//! It seals the key ring (see [`crate::auth::keyring`]), which holds every
//! other secret; a copy of the data directory without it reveals no note
//! text, tag, email or usable key. The file is text, one key per line as 64
//! hexadecimal digits, the first line the current key; the lines after it
//! are older keys a rotation has not yet retired. A file of exactly 32 raw
//! bytes (a systemd credential made with `systemd-creds`) is read as one
//! key. Its id, shown in logs and `notesd master-key status`, is a digest
//! of the key and reveals nothing of it.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::seal::{hex, mac, random_key};

/// File name inside the default directory, and in a systemd credentials
/// directory.
pub const FILE_NAME: &str = "master.key";

#[derive(Debug, thiserror::Error)]
pub enum MasterKeyError {
    #[error("master key file {path}: {source}")]
    Io { path: String, source: io::Error },
    #[error("master key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: String, mode: u32 },
    #[error("master key file {path} is malformed: {reason}")]
    Malformed { path: String, reason: String },
    #[error(
        "master key file {path} is inside the data directory; keep it elsewhere (--master-key-file), or a copy of the data directory opens everything"
    )]
    InsideDataDir { path: String },
    #[error(
        "no master key at {path}, and the data directory's key ring is sealed with master key {sealed_with}; point --master-key-file at that key"
    )]
    Missing { path: String, sealed_with: String },
    #[error("the key ring is sealed with master key {sealed_with}, not with the key at {path} ({have})")]
    Wrong {
        path: String,
        have: String,
        sealed_with: String,
    },
    #[error(
        "no master key file given and no default place for one: set --master-key-file (or HOME, or run under systemd with a credential named {FILE_NAME})"
    )]
    NoPlace,
}

pub struct MasterKey {
    key: [u8; 32],
    id: String,
}

impl MasterKey {
    fn new(key: [u8; 32]) -> Self {
        let id = hex(&mac(&key, &[b"notesd master key id"])[..8]);
        Self { key, id }
    }

    /// 16 hexadecimal digits naming the key.
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.key
    }
}

/// The keys of the master key file, current first.
pub struct MasterKeys {
    path: PathBuf,
    keys: Vec<MasterKey>,
}

impl std::fmt::Debug for MasterKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKeys")
            .field("path", &self.path)
            .field("ids", &self.ids())
            .finish_non_exhaustive()
    }
}

/// Where the master key lives when no path is set: the systemd credential
/// `master.key` when run as a service with one, else
/// `$XDG_CONFIG_HOME/notesd/master.key`, else `~/.config/notesd/master.key`.
pub fn default_path() -> Option<PathBuf> {
    let env = |name| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(credentials) = env("CREDENTIALS_DIRECTORY") {
        return Some(credentials.join(FILE_NAME));
    }
    let config = env("XDG_CONFIG_HOME").or_else(|| env("HOME").map(|home| home.join(".config")))?;
    Some(config.join("notesd").join(FILE_NAME))
}

impl MasterKeys {
    /// Reads the file at `path`; `None` if there is none.
    pub fn load(path: &Path) -> Result<Option<Self>, MasterKeyError> {
        let shown = path.display().to_string();
        let bytes = match fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(MasterKeyError::Io { path: shown, source }),
        };
        let mode = fs::metadata(path)
            .map_err(|source| MasterKeyError::Io {
                path: shown.clone(),
                source,
            })?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(MasterKeyError::TooOpen { path: shown, mode });
        }
        let keys = parse(&bytes).map_err(|reason| MasterKeyError::Malformed {
            path: shown,
            reason: reason.to_owned(),
        })?;
        Ok(Some(Self {
            path: path.to_owned(),
            keys,
        }))
    }

    /// Makes a file with one fresh key (its directory 0700 if new, the
    /// file 0600); an existing file is never replaced: its keys are read.
    pub fn create(path: &Path) -> Result<Self, MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io)?;
        }
        let key = random_key().map_err(|e| io(io::Error::other(e.to_string())))?;
        let keys = Self {
            path: path.to_owned(),
            keys: vec![MasterKey::new(key)],
        };
        let text = keys.text();
        match crate::fsutil::create_private_file(path, text.as_bytes()) {
            Ok(()) => Ok(keys),
            // Another process made it first: theirs is the key.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Self::load(path)?.ok_or_else(|| io(e)),
            Err(e) => Err(io(e)),
        }
    }

    /// Refuses a key file inside `data_dir` (which must exist).
    pub fn check_outside(path: &Path, data_dir: &Path) -> Result<(), MasterKeyError> {
        let inside = |p: &Path| -> Option<bool> {
            let data = fs::canonicalize(data_dir).ok()?;
            // The file itself when it exists (a symbolic link is followed
            // to where the key really is), else its directory.
            let parent = p.parent().filter(|p| !p.as_os_str().is_empty())?;
            let real = fs::canonicalize(p).or_else(|_| fs::canonicalize(parent)).ok()?;
            Some(real.starts_with(data))
        };
        let parent_inside = inside(path).unwrap_or_else(|| {
            // The directory does not exist yet: compare the paths as given.
            let data = std::path::absolute(data_dir).unwrap_or_else(|_| data_dir.to_owned());
            std::path::absolute(path).is_ok_and(|p| p.starts_with(data))
        });
        if parent_inside {
            return Err(MasterKeyError::InsideDataDir {
                path: path.display().to_string(),
            });
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn current(&self) -> &MasterKey {
        // Never empty: `parse` and `create` ensure it.
        &self.keys[0]
    }

    pub fn find(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(MasterKey::id).collect()
    }

    /// Puts a fresh key first; the others stay until [`Self::retire_others`].
    pub fn add_new(&mut self) -> Result<&MasterKey, MasterKeyError> {
        let key = random_key().map_err(|e| MasterKeyError::Io {
            path: self.path.display().to_string(),
            source: io::Error::other(e.to_string()),
        })?;
        self.keys.insert(0, MasterKey::new(key));
        Ok(self.current())
    }

    /// Drops every key but the current one; returns their ids.
    pub fn retire_others(&mut self) -> Vec<String> {
        self.keys.drain(1..).map(|k| k.id).collect()
    }

    /// Writes the file atomically (temporary file, fsync, rename), 0600.
    pub fn save(&self) -> Result<(), MasterKeyError> {
        let io = |source| MasterKeyError::Io {
            path: self.path.display().to_string(),
            source,
        };
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let name = self
            .path
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| io(io::Error::other("the path has no file name")))?;
        crate::fsutil::write_private(dir, name, self.text().as_bytes()).map_err(io)
    }

    fn text(&self) -> String {
        self.keys.iter().map(|k| hex(&k.key) + "\n").collect()
    }
}

fn parse(bytes: &[u8]) -> Result<Vec<MasterKey>, &'static str> {
    let text = std::str::from_utf8(bytes).ok().filter(|t| t.trim().len() >= 64);
    let Some(text) = text else {
        // A raw credential.
        let key: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "expected lines of 64 hexadecimal digits, or 32 raw bytes")?;
        return Ok(vec![MasterKey::new(key)]);
    };
    let keys = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|line| {
            let digits = line.as_bytes();
            if digits.len() != 64 || !digits.iter().all(u8::is_ascii_hexdigit) {
                return Err("a key line is not 64 hexadecimal digits");
            }
            let mut key = [0u8; 32];
            for (byte, pair) in key.iter_mut().zip(digits.chunks_exact(2)) {
                let digit = |d: u8| {
                    char::from(d)
                        .to_digit(16)
                        .and_then(|v| u8::try_from(v).ok())
                        .unwrap_or(0)
                };
                *byte = digit(pair[0]) << 4 | digit(pair[1]);
            }
            Ok(MasterKey::new(key))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if keys.is_empty() {
        return Err("no key");
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_private_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("conf/master.key");
        let made = MasterKeys::create(&path).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let read = MasterKeys::load(&path).unwrap().unwrap();
        assert_eq!(read.current().id(), made.current().id());
        assert_eq!(read.current().key(), made.current().key());
        let again = MasterKeys::create(&path).unwrap();
        assert_eq!(again.current().key(), made.current().key(), "never replaced");
    }

    #[test]
    fn rotation_keeps_the_old_key_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        let mut keys = MasterKeys::create(&path).unwrap();
        let old = keys.current().id().to_owned();
        keys.add_new().unwrap();
        keys.save().unwrap();
        let read = MasterKeys::load(&path).unwrap().unwrap();
        assert_ne!(read.current().id(), old);
        assert!(read.find(&old).is_some());
        keys.retire_others();
        keys.save().unwrap();
        assert!(MasterKeys::load(&path).unwrap().unwrap().find(&old).is_none());
    }

    #[test]
    fn an_open_file_raw_bytes_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.key");
        fs::write(&path, [5u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            MasterKeys::load(&path).unwrap().unwrap().current().key(),
            &[5u8; 32]
        );
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            MasterKeys::load(&path),
            Err(MasterKeyError::TooOpen { .. })
        ));
        fs::write(&path, b"not a key").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            MasterKeys::load(&path),
            Err(MasterKeyError::Malformed { .. })
        ));
    }

    #[test]
    fn a_key_inside_the_data_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        assert!(MasterKeys::check_outside(&data.join("master.key"), &data).is_err());
        assert!(MasterKeys::check_outside(&data.join("sub/master.key"), &data).is_err());
        assert!(MasterKeys::check_outside(&dir.path().join("master.key"), &data).is_ok());
        // A link outside that points inside.
        fs::write(data.join("real.key"), [1u8; 32]).unwrap();
        std::os::unix::fs::symlink(data.join("real.key"), dir.path().join("link.key")).unwrap();
        assert!(MasterKeys::check_outside(&dir.path().join("link.key"), &data).is_err());
    }
}
