//! The master (root) key: 32 bytes that wrap the keyring's KEKs.
//!
//! Source, in order: `AGP_MASTER_KEY` (64 hex characters or the base64 of 32 bytes), or a file
//! the operator names (`AGP_MASTER_KEY_FILE`, `agp serve --master-key-file`: a container's
//! mounted secret, systemd's `$CREDENTIALS_DIRECTORY/master.key`; same formats) — one of the
//! two, never both — else `DATA_DIR/master.key` (64 hex characters and a newline, mode 0600),
//! created on the first start only — when no vault exists yet. Once a vault exists, a missing key
//! is an error: minting a new one would just be a wrong key (design.md: start refuses to serve
//! with a wrong or missing key). A named file is never created: it must exist.
//!
//! Invariants: the key lives in [`Zeroizing`] memory; `Debug` prints `[REDACTED]`; no error
//! or log line contains the key or the variable's value (only its length, at most). The copy
//! in the process environment cannot be wiped from safe Rust (`remove_var` is `unsafe` in
//! edition 2024); deployments that care should prefer the file or a secrets mount.

use std::ffi::OsString;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use zeroize::{Zeroize, Zeroizing};

use super::VaultError;
use super::crypto::{KEY_LEN, KeyBytes, random_key};

pub const MASTER_KEY_ENV: &str = "AGP_MASTER_KEY";
/// The variable that names a file holding the master key (a mounted secret).
pub const MASTER_KEY_FILE_ENV: &str = "AGP_MASTER_KEY_FILE";
pub const MASTER_KEY_FILE: &str = "master.key";

/// Where the operator said the master key is: its value or a file, at most one of them; with
/// neither, `DATA_DIR/master.key`. `Debug` never shows the value.
#[derive(Default)]
pub struct MasterKeyConfig {
    /// `AGP_MASTER_KEY`'s value.
    pub value: Option<OsString>,
    /// A file holding the key (`AGP_MASTER_KEY_FILE`, `--master-key-file`).
    pub file: Option<PathBuf>,
}

impl fmt::Debug for MasterKeyConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKeyConfig")
            .field("value", &self.value.as_ref().map(|_| "[REDACTED]"))
            .field("file", &self.file)
            .finish()
    }
}

impl MasterKeyConfig {
    /// `AGP_MASTER_KEY` and `AGP_MASTER_KEY_FILE` from the process environment (an empty
    /// `AGP_MASTER_KEY_FILE` counts as unset).
    pub fn from_env() -> Self {
        Self {
            value: std::env::var_os(MASTER_KEY_ENV),
            file: std::env::var_os(MASTER_KEY_FILE_ENV)
                .filter(|f| !f.is_empty())
                .map(PathBuf::from),
        }
    }
}

/// The root key. Construct with [`MasterKey::parse`], [`MasterKey::from_bytes`] or
/// [`MasterKey::resolve`].
pub struct MasterKey(KeyBytes);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([REDACTED])")
    }
}

/// Where the master key came from, for the start-up log line. Never the key itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MasterKeySource {
    /// `AGP_MASTER_KEY`.
    Env,
    /// The file the operator named (`AGP_MASTER_KEY_FILE`, `--master-key-file`).
    Named(PathBuf),
    /// An existing `master.key`.
    File(PathBuf),
    /// `master.key` was just created (first start): back it up, or the vault is lost with it.
    Created(PathBuf),
}

impl fmt::Display for MasterKeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MasterKeySource::Env => write!(f, "environment variable {MASTER_KEY_ENV}"),
            MasterKeySource::Named(p) => write!(f, "named file {}", p.display()),
            MasterKeySource::File(p) => write!(f, "file {}", p.display()),
            MasterKeySource::Created(p) => write!(f, "new file {}", p.display()),
        }
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, VaultError> {
        Ok(Self(random_key()?))
    }

    pub(crate) fn bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// Parses 64 hex characters or the base64 (standard or URL-safe, padded or not) of 32
    /// bytes; surrounding whitespace is ignored. `source_name` names the variable or file in
    /// the error, which never contains the text itself.
    pub fn parse(text: &str, source_name: &str) -> Result<Self, VaultError> {
        let text = text.trim();
        let bad = |reason: String| VaultError::MalformedMasterKey {
            source_name: source_name.to_string(),
            reason,
        };
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        if text.len() == 2 * KEY_LEN && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode_to_slice(text, key.as_mut()).map_err(|_| bad("invalid hex".into()))?;
            return Ok(Self(key));
        }
        // Room for longer inputs so a wrong length is reported as such, not as "invalid".
        let mut buf = Zeroizing::new([0u8; 96]);
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            if let Ok(n) = engine.decode_slice(text, buf.as_mut()) {
                if n != KEY_LEN {
                    return Err(bad(format!(
                        "base64 decodes to {n} bytes, expected {KEY_LEN} \
                         (or give 64 hex characters)"
                    )));
                }
                key.copy_from_slice(&buf[..KEY_LEN]);
                return Ok(Self(key));
            }
        }
        Err(bad(format!(
            "expected 64 hex characters or the base64 of {KEY_LEN} bytes, got {} characters \
             that are neither",
            text.chars().count()
        )))
    }

    /// The key where `config` says (see the module documentation); creates
    /// `DATA_DIR/master.key` only if `may_create` (no vault exists yet). `config` comes from
    /// [`MasterKeyConfig::from_env`] in the server; tests pass their own.
    pub fn resolve(
        config: MasterKeyConfig,
        data_dir: &Path,
        may_create: bool,
    ) -> Result<(Self, MasterKeySource), VaultError> {
        if let Some(given) = Self::resolve_given(config)? {
            return Ok(given);
        }
        let path = data_dir.join(MASTER_KEY_FILE);
        match read_key_file(&path)? {
            Some(key) => Ok((key, MasterKeySource::File(path))),
            None if may_create => {
                let key = create_key_file(&path)?;
                Ok((key, MasterKeySource::Created(path)))
            }
            None => Err(VaultError::MissingMasterKey {
                vault: super::vault_path(data_dir),
                key_file: path,
            }),
        }
    }

    /// The key for a vault in a database, shared by every replica: `AGP_MASTER_KEY` or a
    /// named file, never `DATA_DIR/master.key` (which one replica would mint and the others
    /// would not have). Neither is [`VaultError::MasterKeyRequired`].
    pub fn resolve_explicit(
        config: MasterKeyConfig,
    ) -> Result<(Self, MasterKeySource), VaultError> {
        Self::resolve_given(config)?.ok_or(VaultError::MasterKeyRequired)
    }

    /// The key `config` gives explicitly (its value or a named file), `None` when it gives
    /// neither.
    fn resolve_given(
        config: MasterKeyConfig,
    ) -> Result<Option<(Self, MasterKeySource)>, VaultError> {
        match config {
            MasterKeyConfig {
                value: Some(_),
                file: Some(_),
            } => Err(VaultError::AmbiguousMasterKey),
            MasterKeyConfig {
                value: Some(value),
                file: None,
            } => {
                let value = Zeroizing::new(value.into_string().map_err(|raw| {
                    raw.into_vec().zeroize();
                    VaultError::MalformedMasterKey {
                        source_name: MASTER_KEY_ENV.into(),
                        reason: "it is not valid UTF-8".into(),
                    }
                })?);
                Ok(Some((
                    Self::parse(&value, MASTER_KEY_ENV)?,
                    MasterKeySource::Env,
                )))
            }
            MasterKeyConfig {
                value: None,
                file: Some(path),
            } => match read_key_file(&path)? {
                Some(key) => Ok(Some((key, MasterKeySource::Named(path)))),
                None => Err(VaultError::MissingMasterKeyFile(path)),
            },
            MasterKeyConfig {
                value: None,
                file: None,
            } => Ok(None),
        }
    }
}

fn read_key_file(path: &Path) -> Result<Option<MasterKey>, VaultError> {
    let mut file = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(VaultError::io(format!("opening {}", path.display()))(e)),
    };
    let mode = file
        .metadata()
        .map_err(VaultError::io(format!("reading {}", path.display())))?
        .mode();
    if mode & 0o077 != 0 {
        // Not fatal (containers mount odd modes), but an operator must hear about it.
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "master key file is readable by group or others; chmod 600 it"
        );
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(VaultError::io(format!("reading {}", path.display())))?;
    MasterKey::parse(&text, &path.display().to_string()).map(Some)
}

/// Writes a new key to a temporary file (0600, `create_new`), syncs it, then hard-links it to
/// `path`: the link fails if `path` exists (two racing first starts agree on one key) and the
/// key file is never seen half-written.
fn create_key_file(path: &Path) -> Result<MasterKey, VaultError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    if !dir.exists() {
        fs::create_dir_all(dir).map_err(VaultError::io(format!("creating {}", dir.display())))?;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(VaultError::io(format!("chmod {}", dir.display())))?;
    }
    let key = MasterKey::generate()?;
    let mut suffix = [0u8; 8];
    getrandom::fill(&mut suffix).map_err(|_| VaultError::Rng)?;
    let tmp = dir.join(format!("{MASTER_KEY_FILE}.{}.tmp", hex::encode(suffix)));
    let context = format!("creating {}", path.display());
    let written = (|| -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        let mut line = Zeroizing::new(hex::encode(key.bytes()));
        line.push('\n');
        f.write_all(line.as_bytes())?;
        f.sync_all()
    })();
    let linked = written.and_then(|()| fs::hard_link(&tmp, path));
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(VaultError::io(context))?;
            Ok(key)
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => read_key_file(path)?
            .ok_or_else(|| VaultError::io(context)(io::Error::other("vanished after creation"))),
        Err(e) => Err(VaultError::io(context)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    fn expected() -> [u8; 32] {
        std::array::from_fn(|i| i as u8)
    }

    fn value(text: &str) -> MasterKeyConfig {
        MasterKeyConfig {
            value: Some(text.into()),
            file: None,
        }
    }

    fn named(path: &Path) -> MasterKeyConfig {
        MasterKeyConfig {
            value: None,
            file: Some(path.to_path_buf()),
        }
    }

    #[test]
    fn parses_hex_and_every_base64_flavour() {
        assert_eq!(*MasterKey::parse(HEX, "X").unwrap().bytes(), expected());
        let upper = HEX.to_uppercase();
        assert_eq!(*MasterKey::parse(&upper, "X").unwrap().bytes(), expected());
        for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
            let text = format!("  {}\n", engine.encode(expected()));
            assert_eq!(*MasterKey::parse(&text, "X").unwrap().bytes(), expected());
        }
    }

    #[test]
    fn bad_values_are_refused_without_echoing_them() {
        let cases = [
            "".to_string(),
            HEX[..62].to_string(),
            format!("{HEX}00"),
            STANDARD.encode([7u8; 31]),
            STANDARD.encode([7u8; 33]),
            "zz-not-a-key-zz".to_string(),
            format!("{}g", &HEX[..63]),
        ];
        for value in cases {
            let err = MasterKey::parse(&value, MASTER_KEY_ENV).unwrap_err();
            let msg = err.to_string();
            assert!(msg.contains(MASTER_KEY_ENV), "{msg}");
            if !value.is_empty() {
                assert!(!msg.contains(&value), "message echoes the value");
            }
            assert!(!format!("{err:?}").contains(&value) || value.is_empty());
        }
    }

    #[test]
    fn debug_is_redacted() {
        let k = MasterKey::parse(HEX, "X").unwrap();
        assert_eq!(format!("{k:?}"), "MasterKey([REDACTED])");
    }

    #[test]
    fn env_wins_over_file_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (k, src) = MasterKey::resolve(value(HEX), dir.path(), true).unwrap();
        assert_eq!(src, MasterKeySource::Env);
        assert_eq!(*k.bytes(), expected());
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn file_created_once_0600_then_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        let (k1, src1) = MasterKey::resolve(MasterKeyConfig::default(), dir.path(), true).unwrap();
        assert_eq!(src1, MasterKeySource::Created(path.clone()));
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o600);
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 65);
        assert!(text.ends_with('\n'));
        let (k2, src2) = MasterKey::resolve(MasterKeyConfig::default(), dir.path(), true).unwrap();
        assert_eq!(src2, MasterKeySource::File(path));
        assert_eq!(k1.bytes(), k2.bytes());
        // No temporary files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn missing_file_is_not_created_when_a_vault_exists() {
        let dir = tempfile::tempdir().unwrap();
        let err = MasterKey::resolve(MasterKeyConfig::default(), dir.path(), false).unwrap_err();
        assert!(matches!(err, VaultError::MissingMasterKey { .. }));
        assert!(!dir.path().join(MASTER_KEY_FILE).exists());
    }

    #[test]
    fn malformed_file_names_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(MASTER_KEY_FILE);
        fs::write(&path, "secret-but-wrong\n").unwrap();
        let msg = MasterKey::resolve(MasterKeyConfig::default(), dir.path(), true)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(MASTER_KEY_FILE));
        assert!(!msg.contains("secret-but-wrong"));
    }

    #[test]
    fn a_named_file_is_read_and_reported_and_never_created() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        // Given a mounted secret in the base64 form, with a trailing newline.
        fs::write(&secret, format!("{}\n", STANDARD.encode(expected()))).unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o400)).unwrap();
        let data = dir.path().join("data");
        let (k, src) = MasterKey::resolve(named(&secret), &data, true).unwrap();
        assert_eq!(*k.bytes(), expected());
        assert_eq!(src, MasterKeySource::Named(secret.clone()));
        assert!(
            !data.join(MASTER_KEY_FILE).exists(),
            "no key file in the data directory"
        );

        // A named file that is missing is an error even on a first start: never minted.
        let missing = dir.path().join("nope");
        let err = MasterKey::resolve(named(&missing), &data, true).unwrap_err();
        assert!(matches!(err, VaultError::MissingMasterKeyFile(ref p) if p == &missing));
        assert!(err.is_key_problem());
        assert!(!missing.exists());
        assert!(err.to_string().contains(MASTER_KEY_FILE_ENV), "{err}");
    }

    #[test]
    fn a_value_and_a_file_together_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, HEX).unwrap();
        let both = MasterKeyConfig {
            value: Some(HEX.into()),
            file: Some(secret),
        };
        let debug = format!("{both:?}");
        assert!(!debug.contains(HEX), "{debug}");
        let err = MasterKey::resolve(both, dir.path(), true).unwrap_err();
        assert!(matches!(err, VaultError::AmbiguousMasterKey));
        assert!(!err.to_string().contains(HEX));
    }

    #[test]
    fn a_malformed_named_file_names_the_file_not_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        fs::write(&secret, "secret-but-wrong").unwrap();
        let msg = MasterKey::resolve(named(&secret), dir.path(), true)
            .unwrap_err()
            .to_string();
        assert!(msg.contains(secret.to_str().unwrap()), "{msg}");
        assert!(!msg.contains("secret-but-wrong"));
    }
}
