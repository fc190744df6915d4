//! Files that hold secrets: written whole or not at all, readable by the
//! owner only.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes `bytes` to a new 0600 file beside `path` with a name of its own
/// (two writers never touch each other's), fsynced; removed again if that
/// fails (a full disk, say), so nothing half-written is left behind.
fn write_temp(path: &Path, bytes: &[u8]) -> io::Result<std::path::PathBuf> {
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp-{}", crate::seal::hex(&nonce)));
    let tmp = std::path::PathBuf::from(tmp);
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}

fn sync_parent(path: &Path) -> io::Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::File::open(dir)?.sync_all()
}

/// Replaces `dir/name` with `bytes` atomically (temporary file, fsync,
/// rename, fsync of the directory), mode 0600 whatever the umask.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = write_temp(&path, bytes)?;
    if let Err(e) = fs::rename(&tmp, &path) {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    sync_parent(&path)
}

/// Creates `path` holding `bytes`, mode 0600, only if nothing is there
/// (`AlreadyExists` otherwise): written whole under another name, then
/// linked into place, so whoever reads the path never sees it half
/// written; the link is made durable before this returns.
pub fn create_private_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = write_temp(path, bytes)?;
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    linked?;
    sync_parent(path)
}

/// An exclusive lock on the data directory (its `notesd.lock` file), held
/// until the returned file is dropped; `None` if another process holds it.
/// Everything that opens the key ring or the database takes it first, so
/// two processes never create or replace either at once.
pub fn lock_dir(dir: &Path) -> io::Result<Option<fs::File>> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(dir.join(LOCK_FILE))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(fs::TryLockError::WouldBlock) => Ok(None),
        Err(fs::TryLockError::Error(e)) => Err(e),
    }
}

pub const LOCK_FILE: &str = "notesd.lock";

/// Creates an empty file (or keeps an existing one), mode 0600, before a
/// library opens it with its own, wider, mode.
pub fn create_private(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn written_files_are_private_and_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        write_private(dir.path(), "secret", b"one").unwrap();
        write_private(dir.path(), "secret", b"two").unwrap();
        let path = dir.path().join("secret");
        assert_eq!(fs::read(&path).unwrap(), b"two");
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary file left"
        );
    }
}
