//! Unit tests of the vault's own behaviour; the adversarial suite (raw tampering, disk
//! scans, crashes) is `tests/vault.rs`.

use std::sync::Arc;

use secrecy::{ExposeSecret, SecretString};

use super::*;

fn master(b: u8) -> MasterKey {
    MasterKey::from_bytes([b; 32])
}

fn secret(s: &str) -> SecretString {
    SecretString::from(s)
}

#[test]
fn seal_then_open_round_trips_and_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    let slot = Slot::consent("c1", 1);
    assert!(
        vault
            .open_secret(&slot, Field::AccessToken)
            .unwrap()
            .is_none()
    );
    assert!(!vault.has(&slot, Field::AccessToken).unwrap());

    vault
        .seal(&slot, Field::AccessToken, &secret("at-1"))
        .unwrap();
    vault
        .seal(&slot, Field::RefreshToken, &secret("rt-1"))
        .unwrap();
    assert!(vault.has(&slot, Field::AccessToken).unwrap());
    let open = |f| vault.open_secret(&slot, f).unwrap().unwrap();
    assert_eq!(open(Field::AccessToken).expose_secret(), "at-1");
    assert_eq!(open(Field::RefreshToken).expose_secret(), "rt-1");

    vault
        .seal(&slot, Field::RefreshToken, &secret("rt-2"))
        .unwrap();
    assert_eq!(open(Field::RefreshToken).expose_secret(), "rt-2");
}

#[test]
fn bytes_round_trip_and_non_utf8_is_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    let slot = Slot::client("c1");
    vault
        .seal_bytes(&slot, Field::ClientSecret, &[0xff, 0x00, 0xfe])
        .unwrap();
    let bytes = vault
        .open_secret_bytes(&slot, Field::ClientSecret)
        .unwrap()
        .unwrap();
    assert_eq!(bytes.expose_secret(), &[0xff, 0x00, 0xfe]);
    assert!(matches!(
        vault.open_secret(&slot, Field::ClientSecret),
        Err(VaultError::NotUtf8(Record::Secret(_, Field::ClientSecret)))
    ));
}

#[test]
fn secrets_survive_reopen_and_each_slot_has_its_own_data_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let vault = Vault::open(dir.path(), master(3)).unwrap();
        vault
            .seal(&Slot::client("c"), Field::ClientSecret, &secret("cs"))
            .unwrap();
        vault
            .seal(&Slot::consent("c", 1), Field::AccessToken, &secret("a1"))
            .unwrap();
        vault
            .seal(&Slot::consent("c", 2), Field::AccessToken, &secret("a2"))
            .unwrap();
        assert_eq!(vault.status().unwrap().keys[0].data_keys, 3);
    }
    let vault = Vault::open(dir.path(), master(3)).unwrap();
    let get = |slot: Slot, f| vault.open_secret(&slot, f).unwrap().unwrap();
    assert_eq!(
        get(Slot::client("c"), Field::ClientSecret).expose_secret(),
        "cs"
    );
    assert_eq!(
        get(Slot::consent("c", 1), Field::AccessToken).expose_secret(),
        "a1"
    );
    assert_eq!(
        get(Slot::consent("c", 2), Field::AccessToken).expose_secret(),
        "a2"
    );
}

#[test]
fn wrong_master_key_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(Vault::open(dir.path(), master(1)).unwrap());
    let err = Vault::open(dir.path(), master(2)).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    assert!(err.is_key_problem());
}

#[test]
fn a_second_open_of_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = Vault::open(dir.path(), master(1)).unwrap();
    assert!(matches!(
        Vault::open(dir.path(), master(1)),
        Err(VaultError::InUse(_))
    ));
}

#[test]
fn shred_returns_counts_then_the_slot_reads_as_empty() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    let slot = Slot::consent("c", 1);
    vault.seal(&slot, Field::AccessToken, &secret("a")).unwrap();
    vault
        .seal(&slot, Field::RefreshToken, &secret("r"))
        .unwrap();
    let before = layout::current_db_path(dir.path()).unwrap();
    let shredded = vault.shred(&slot).unwrap();
    assert_eq!(
        shredded,
        Shredded {
            data_keys: 1,
            secrets: 2
        }
    );
    assert!(
        vault
            .open_secret(&slot, Field::RefreshToken)
            .unwrap()
            .is_none()
    );
    assert!(!vault.has(&slot, Field::RefreshToken).unwrap());
    // Compaction moved to a new database and removed the old one.
    let after = layout::current_db_path(dir.path()).unwrap();
    assert_ne!(before, after);
    assert!(!before.unwrap().exists());
    // Shredding again is harmless; sealing again creates a fresh data key.
    assert_eq!(vault.shred(&slot).unwrap(), Shredded::default());
    vault.seal(&slot, Field::AccessToken, &secret("b")).unwrap();
    assert_eq!(
        vault
            .open_secret(&slot, Field::AccessToken)
            .unwrap()
            .unwrap()
            .expose_secret(),
        "b"
    );
}

#[test]
fn shred_connector_except_keeps_only_the_named_generations() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    vault
        .seal(&Slot::client("c"), Field::ClientSecret, &secret("client"))
        .unwrap();
    for g in [1, 2, 3] {
        vault
            .seal(&Slot::consent("c", g), Field::RefreshToken, &secret("rt"))
            .unwrap();
    }
    let shredded = vault.shred_connector_except("c", &[0, 2]).unwrap();
    assert_eq!(
        shredded,
        Shredded {
            data_keys: 2,
            secrets: 2
        }
    );
    let has = |g: u64, f: Field| vault.has(&Slot::consent("c", g), f).unwrap();
    assert!(has(0, Field::ClientSecret), "the client slot is kept");
    assert!(
        has(2, Field::RefreshToken),
        "the pending generation is kept"
    );
    assert!(!has(1, Field::RefreshToken) && !has(3, Field::RefreshToken));
    vault.shred_connector("c").unwrap();
    assert!(!has(0, Field::ClientSecret) && !has(2, Field::RefreshToken));
}

/// Issue 14 (7): a connector's sealed quarantine diffs (upstream's text, kept out of the log)
/// go with the connector, also when a pending revocation keeps a generation.
#[test]
fn a_connector_s_quarantine_diffs_are_shredded_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    let diffs = Slot::quarantine("c");
    vault
        .seal_bytes(&diffs, Field::QuarantineDiffs, br#"{"tools":{}}"#)
        .unwrap();
    vault
        .seal(&Slot::consent("c", 1), Field::RefreshToken, &secret("rt"))
        .unwrap();
    vault.shred_connector_except("c", &[1]).unwrap();
    assert!(!vault.has(&diffs, Field::QuarantineDiffs).unwrap());
    assert!(
        vault
            .has(&Slot::consent("c", 1), Field::RefreshToken)
            .unwrap()
    );
    vault
        .seal_bytes(&diffs, Field::QuarantineDiffs, br#"{"tools":{}}"#)
        .unwrap();
    vault.shred_connector("c").unwrap();
    assert!(!vault.has(&diffs, Field::QuarantineDiffs).unwrap());
}

#[test]
fn shred_connector_spares_other_connectors_including_prefix_lookalikes() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    for id in ["ab", "abc"] {
        vault
            .seal(&Slot::client(id), Field::ClientSecret, &secret(id))
            .unwrap();
        vault
            .seal(&Slot::consent(id, 4), Field::AccessToken, &secret(id))
            .unwrap();
    }
    let shredded = vault.shred_connector("ab").unwrap();
    assert_eq!(
        shredded,
        Shredded {
            data_keys: 2,
            secrets: 2
        }
    );
    assert!(
        vault
            .open_secret(&Slot::client("ab"), Field::ClientSecret)
            .unwrap()
            .is_none()
    );
    assert!(
        vault
            .open_secret(&Slot::client("abc"), Field::ClientSecret)
            .unwrap()
            .is_some()
    );
    assert!(
        vault
            .open_secret(&Slot::consent("abc", 4), Field::AccessToken)
            .unwrap()
            .is_some()
    );
}

#[test]
fn invalid_slots_are_refused_before_touching_storage() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(1)).unwrap();
    let bad = Slot::client("");
    assert!(matches!(
        vault.seal(&bad, Field::AccessToken, &secret("x")),
        Err(VaultError::InvalidSlot(_))
    ));
    assert!(matches!(
        vault.shred_connector(""),
        Err(VaultError::InvalidSlot(_))
    ));
}

#[test]
fn concurrent_first_seals_of_one_slot_share_its_data_key() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(Vault::open(dir.path(), master(1)).unwrap());
    let slot = Slot::consent("race", 1);
    let handles: Vec<_> = Field::ALL
        .into_iter()
        .map(|field| {
            let (vault, slot) = (vault.clone(), slot.clone());
            std::thread::spawn(move || {
                vault.seal(&slot, field, &secret(field.name())).unwrap();
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    for field in Field::ALL {
        let got = vault.open_secret(&slot, field).unwrap().unwrap();
        assert_eq!(got.expose_secret(), field.name());
    }
    assert_eq!(vault.status().unwrap().keys[0].data_keys, 1);
}

#[test]
fn debug_shows_no_key_material() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Vault::open(dir.path(), master(0xab)).unwrap();
    vault
        .seal(
            &Slot::client("c"),
            Field::ClientSecret,
            &secret("do-not-print"),
        )
        .unwrap();
    let shown = format!("{vault:?}");
    assert!(shown.contains("k1"));
    assert!(!shown.contains("do-not-print"));
    assert!(!shown.to_lowercase().contains("abababab"));
    assert!(!shown.contains("171, 171"));
}

#[test]
fn rekey_replaces_the_master_key_and_every_kek() {
    let dir = tempfile::tempdir().unwrap();
    {
        let vault = Vault::open(dir.path(), master(1)).unwrap();
        for g in 1..=3 {
            vault
                .seal(&Slot::consent("c", g), Field::AccessToken, &secret("at"))
                .unwrap();
        }
        vault.rotate().unwrap();
        let id = vault.rekey(master(2)).unwrap();
        assert_eq!(id.to_string(), "k3");
        let status = vault.status().unwrap();
        assert_eq!(status.keys.len(), 1);
        assert_eq!(status.pending_rewrap, 0);
        assert_eq!(status.active_key_id, id);
        for g in 1..=3 {
            let s = vault
                .open_secret(&Slot::consent("c", g), Field::AccessToken)
                .unwrap()
                .unwrap();
            assert_eq!(s.expose_secret(), "at");
        }
        // Later writes use the new master key's keyring.
        vault.rotate().unwrap();
        vault.rewrap_pending(10).unwrap();
    }
    assert!(matches!(
        Vault::open(dir.path(), master(1)),
        Err(VaultError::WrongMasterKey)
    ));
    let vault = Vault::open(dir.path(), master(2)).unwrap();
    let s = vault
        .open_secret(&Slot::consent("c", 2), Field::AccessToken)
        .unwrap()
        .unwrap();
    assert_eq!(s.expose_secret(), "at");
}
