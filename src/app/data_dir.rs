//! The data directory: created on first start (mode 0700), holding the event log (`events/`)
//! and the admin token (`admin.token`, mode 0600, created once and never rewritten).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const EVENTS_DIR: &str = "events";

/// What in a data directory is for AGP's user alone, and the mode it gets: the directory, the
/// vault, the admin token and the master key file.
const PRIVATE: [(&str, u32); 4] = [
    ("", 0o700),
    (crate::vault::VAULT_DIR, 0o700),
    (ADMIN_TOKEN_FILE, 0o600),
    (crate::vault::MASTER_KEY_FILE, 0o600),
];

/// Creates `dir` (0700) if missing; in an existing one, makes private whatever of [`PRIVATE`]
/// group or others can reach (with a warning naming it), and fails, naming the path, when that
/// is not possible: a secret that others can read is not served from.
pub fn ensure(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    for (name, private) in PRIVATE {
        let path = if name.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(name)
        };
        let mode = match fs::metadata(&path) {
            Ok(m) => m.mode() & 0o777,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if mode & 0o077 == 0 {
            continue;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(private)).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "{} has mode {mode:o} (group or others can reach it) and could not be made {private:o}: {e}",
                    path.display()
                ),
            )
        })?;
        tracing::warn!(
            path = %path.display(),
            was = format!("{mode:o}"),
            now = format!("{private:o}"),
            "a secret of AGP's was reachable by group or others; made it private"
        );
    }
    Ok(())
}

pub fn events_path(dir: &Path) -> PathBuf {
    dir.join(EVENTS_DIR)
}

pub fn admin_token_path(dir: &Path) -> PathBuf {
    dir.join(ADMIN_TOKEN_FILE)
}

/// Whether the admin token was just created or already existed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOrigin {
    Created,
    Existing,
}

/// Reads the admin token, creating a random one (`agpadm_` + 64 hex) with mode 0600 the first
/// time. `create_new` makes two racing starts agree on one token.
pub fn admin_token(dir: &Path) -> io::Result<(String, TokenOrigin)> {
    let path = admin_token_path(dir);
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    let token = format!("agpadm_{}", hex::encode(bytes));
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
    {
        Ok(mut f) => {
            f.write_all(token.as_bytes())?;
            f.write_all(b"\n")?;
            f.sync_all()?;
            Ok((token, TokenOrigin::Created))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok((read_admin_token(dir)?, TokenOrigin::Existing))
        }
        Err(e) => Err(e),
    }
}

/// Reads an existing admin token.
pub fn read_admin_token(dir: &Path) -> io::Result<String> {
    let path = admin_token_path(dir);
    let token = fs::read_to_string(&path)?.trim().to_string();
    if token.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().mode() & 0o777
    }

    /// Issue 14 (10): an existing data directory whose secrets group or others can read (a
    /// restored backup, a careless `chmod -R`) is made private at start, not only a new one.
    #[test]
    fn an_existing_data_directory_s_secrets_are_made_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        fs::create_dir(&dir).unwrap();
        fs::create_dir(dir.join("vault")).unwrap();
        fs::write(dir.join(ADMIN_TOKEN_FILE), "agpadm_x\n").unwrap();
        fs::write(dir.join("master.key"), "00\n").unwrap();
        fs::write(dir.join("other"), "not a secret").unwrap();
        for (p, m) in [
            (dir.clone(), 0o755),
            (dir.join("vault"), 0o775),
            (dir.join(ADMIN_TOKEN_FILE), 0o644),
            (dir.join("master.key"), 0o640),
            (dir.join("other"), 0o644),
        ] {
            fs::set_permissions(&p, fs::Permissions::from_mode(m)).unwrap();
        }
        ensure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("vault")), 0o700);
        assert_eq!(mode(&dir.join(ADMIN_TOKEN_FILE)), 0o600);
        assert_eq!(mode(&dir.join("master.key")), 0o600);
        assert_eq!(
            mode(&dir.join("other")),
            0o644,
            "only AGP's secrets are touched"
        );
        // Private already: nothing changes, nothing fails.
        ensure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }

    #[test]
    fn a_new_data_directory_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("new");
        ensure(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let (_, origin) = admin_token(&dir).unwrap();
        assert_eq!(origin, TokenOrigin::Created);
        assert_eq!(mode(&admin_token_path(&dir)), 0o600);
    }
}
