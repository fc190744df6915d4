//! Files that hold secrets: written whole or not at all, readable by the
//! owner only.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Replaces `dir/name` with `bytes` atomically (temporary file, fsync,
/// rename, fsync of the directory), mode 0600 whatever the umask.
pub fn write_private(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let path = dir.join(name);
    let tmp = dir.join(format!("{name}.tmp"));
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, &path)?;
    fs::File::open(dir)?.sync_all()
}

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
        assert!(!dir.path().join("secret.tmp").exists());
    }
}
