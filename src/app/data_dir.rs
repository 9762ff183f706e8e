//! The data directory: created on first start (mode 0700), holding the event log (`events/`)
//! and the admin token (`admin.token`, mode 0600, created once and never rewritten).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

pub const ADMIN_TOKEN_FILE: &str = "admin.token";
pub const EVENTS_DIR: &str = "events";

/// Creates `dir` (0700) if missing.
pub fn ensure(dir: &Path) -> io::Result<()> {
    if !dir.exists() {
        fs::create_dir_all(dir)?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
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
