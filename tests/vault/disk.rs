//! What reaches the disk (S12, S13) and where the master key comes from.
//!
//! The canary: a random token sealed through the public API must appear in no file of the
//! data directory, in plaintext or in its obvious encodings; after a shred, even the bytes of
//! its wrapped data key and its ciphertext are gone from every file.

use std::os::unix::fs::PermissionsExt;

use agp::vault::{
    self, Field, MASTER_KEY_ENV, MASTER_KEY_FILE, MasterKeySource, Slot, VaultError, layout,
};
use base64::Engine;

use crate::helpers::{files_containing, files_under, raw_get, read, secret, with_raw_db};

fn env_key_is_set() -> bool {
    // These tests exercise the file path; a developer's exported key would change the source.
    let set = std::env::var_os(MASTER_KEY_ENV).is_some();
    if set {
        eprintln!("{MASTER_KEY_ENV} is set in this environment; skipping");
    }
    set
}

fn assert_nowhere(root: &std::path::Path, needle: &[u8], what: &str) {
    let found = files_containing(root, needle);
    assert!(found.is_empty(), "{what} found on disk in {found:?}");
}

#[test]
fn canary_never_reaches_disk_and_shredding_removes_its_key_material() {
    if env_key_is_set() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    let vault_dir = vault::vault_path(data.path());
    let canary = crate::helpers::random_token("agp-canary-");
    let slot = Slot::consent("conn-canary", 1);
    let bystander = Slot::client("conn-other");

    let (vault, source) = vault::open_for_data_dir(data.path()).unwrap();
    assert!(matches!(source, MasterKeySource::Created(_)));
    vault
        .seal(&slot, Field::RefreshToken, &secret(&canary))
        .unwrap();
    vault
        .seal(&slot, Field::AccessToken, &secret(&canary))
        .unwrap();
    vault
        .seal(
            &bystander,
            Field::ClientSecret,
            &secret("other-secret-value"),
        )
        .unwrap();

    let encodings = [
        canary.as_bytes().to_vec(),
        hex::encode(canary.as_bytes()).into_bytes(),
        base64::engine::general_purpose::STANDARD
            .encode(canary.as_bytes())
            .into_bytes(),
    ];
    // While open (every write is flushed), and after close.
    for e in &encodings {
        assert_nowhere(data.path(), e, "the canary");
    }
    drop(vault);
    for e in &encodings {
        assert_nowhere(data.path(), e, "the canary");
    }

    // What an attacker holding the files before the shred would have.
    let (wrapped_dk, sealed_rt) = with_raw_db(&vault_dir, |db| {
        (
            raw_get(db, &layout::data_key_key(&slot)),
            raw_get(db, &layout::secret_key(&slot, Field::RefreshToken)),
        )
    });
    // Positive control: the scan does find records that are on disk.
    assert!(!files_containing(&vault_dir, &wrapped_dk).is_empty());
    assert!(!files_containing(&vault_dir, &sealed_rt).is_empty());

    let (vault, source) = vault::open_for_data_dir(data.path()).unwrap();
    assert!(matches!(source, MasterKeySource::File(_)));
    assert_eq!(read(&vault, &slot, Field::RefreshToken), canary);
    let shredded = vault.shred(&slot).unwrap();
    assert_eq!((shredded.data_keys, shredded.secrets), (1, 2));
    assert!(
        vault
            .open_secret(&slot, Field::RefreshToken)
            .unwrap()
            .is_none()
    );
    for needle in [&wrapped_dk, &sealed_rt] {
        assert_nowhere(data.path(), needle, "shredded key material");
    }
    assert_eq!(
        read(&vault, &bystander, Field::ClientSecret),
        "other-secret-value"
    );
    drop(vault);
    for needle in [&wrapped_dk, &sealed_rt] {
        assert_nowhere(data.path(), needle, "shredded key material");
    }
    for e in &encodings {
        assert_nowhere(data.path(), e, "the canary");
    }
}

#[test]
fn master_key_file_is_created_0600_once_and_reused() {
    if env_key_is_set() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("agp-data");
    let key_path = data.join(MASTER_KEY_FILE);
    let (vault, source) = vault::open_for_data_dir(&data).unwrap();
    assert_eq!(source, MasterKeySource::Created(key_path.clone()));
    let data_mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(
        data_mode & 0o777,
        0o700,
        "a data directory created here is private"
    );
    let mode = std::fs::metadata(&key_path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let vault_mode = std::fs::metadata(vault.dir().expect("a sled vault"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(vault_mode & 0o777, 0o700);
    vault
        .seal(&Slot::client("c"), Field::ClientSecret, &secret("cs-value"))
        .unwrap();
    drop(vault);

    let text_before = std::fs::read_to_string(&key_path).unwrap();
    let (vault, source) = vault::open_for_data_dir(&data).unwrap();
    assert_eq!(source, MasterKeySource::File(key_path.clone()));
    assert_eq!(
        read(&vault, &Slot::client("c"), Field::ClientSecret),
        "cs-value"
    );
    assert_eq!(std::fs::read_to_string(&key_path).unwrap(), text_before);
}

#[test]
fn an_existing_vault_without_its_key_refuses_and_creates_nothing() {
    if env_key_is_set() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    drop(vault::open_for_data_dir(data.path()).unwrap());
    let key_path = data.path().join(MASTER_KEY_FILE);
    std::fs::remove_file(&key_path).unwrap();
    let err = vault::open_for_data_dir(data.path()).unwrap_err();
    assert!(matches!(err, VaultError::MissingMasterKey { .. }), "{err}");
    assert!(err.is_key_problem());
    assert!(!key_path.exists());
}

#[test]
fn a_replaced_master_key_file_is_a_wrong_master_key() {
    if env_key_is_set() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    drop(vault::open_for_data_dir(data.path()).unwrap());
    let key_path = data.path().join(MASTER_KEY_FILE);
    std::fs::write(&key_path, format!("{}\n", "ab".repeat(32))).unwrap();
    let err = vault::open_for_data_dir(data.path()).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
}

#[test]
fn the_vault_directory_holds_only_its_documented_files() {
    let data = tempfile::tempdir().unwrap();
    let dir = vault::vault_path(data.path());
    let vault = agp::vault::Vault::open(&dir, crate::helpers::master(1)).unwrap();
    vault
        .seal(&Slot::client("c"), Field::ClientSecret, &secret("x-value"))
        .unwrap();
    vault.shred(&Slot::client("c")).unwrap();
    let mut top: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    top.sort();
    let current = layout::current_db_path(&dir).unwrap().unwrap();
    let db_name = current.file_name().unwrap().to_str().unwrap().to_string();
    let mut expected = vec!["CURRENT".to_string(), "lock".into(), db_name];
    expected.sort();
    assert_eq!(top, expected);
    assert!(files_under(&dir).len() >= 3);
}
