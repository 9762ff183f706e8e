//! S11: a ciphertext moved to another slot, field or connector, a flipped bit anywhere, or an
//! unknown key id fails closed with a typed error — never plaintext, never garbage.

use agp::vault::{Field, KeyId, Record, Slot, Vault, VaultError, layout};

use crate::helpers::{master, open, raw_get, read, secret, with_raw_db};

const VALUE: &str = "tamper-test-token-value-0123456789";

/// A vault with `c1` generation 1 (access + refresh), `c1` generation 2 and `c2` generation 1.
fn populated() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let vault = open(dir.path());
    for slot in [
        Slot::consent("c1", 1),
        Slot::consent("c1", 2),
        Slot::consent("c2", 1),
    ] {
        vault
            .seal(&slot, Field::AccessToken, &secret(VALUE))
            .expect("seal");
        vault
            .seal(&slot, Field::RefreshToken, &secret(VALUE))
            .expect("seal");
    }
    dir
}

/// Opens and asserts a typed failure whose text and debug form hold no secret.
fn open_fails(vault: &Vault, slot: &Slot, field: Field) -> VaultError {
    let err = vault
        .open_secret(slot, field)
        .expect_err("tampered record must not open");
    assert!(!err.to_string().contains(VALUE) && !format!("{err:?}").contains(VALUE));
    err
}

#[test]
fn ciphertext_moved_to_another_field_fails_closed() {
    let dir = populated();
    let slot = Slot::consent("c1", 1);
    with_raw_db(dir.path(), |db| {
        let rt = raw_get(db, &layout::secret_key(&slot, Field::RefreshToken));
        db.insert(layout::secret_key(&slot, Field::AccessToken), rt)
            .unwrap();
    });
    let vault = open(dir.path());
    let err = open_fails(&vault, &slot, Field::AccessToken);
    assert!(
        matches!(err, VaultError::Tampered(Record::Secret(ref s, Field::AccessToken)) if *s == slot),
        "{err}"
    );
    // The untouched field still opens.
    assert_eq!(read(&vault, &slot, Field::RefreshToken), VALUE);
}

#[test]
fn ciphertext_moved_to_another_generation_fails_closed() {
    let dir = populated();
    let (from, to) = (Slot::consent("c1", 1), Slot::consent("c1", 2));
    with_raw_db(dir.path(), |db| {
        let v = raw_get(db, &layout::secret_key(&from, Field::RefreshToken));
        db.insert(layout::secret_key(&to, Field::RefreshToken), v)
            .unwrap();
    });
    let vault = open(dir.path());
    let err = open_fails(&vault, &to, Field::RefreshToken);
    assert!(
        matches!(err, VaultError::Tampered(Record::Secret(..))),
        "{err}"
    );
}

#[test]
fn slot_transplanted_to_another_connector_fails_closed() {
    // The attacker copies both the data key and the secret: the data key's associated data
    // names its connector, so the transplant fails at the data key.
    let dir = populated();
    let (from, to) = (Slot::consent("c1", 1), Slot::consent("c3", 1));
    with_raw_db(dir.path(), |db| {
        let dk = raw_get(db, &layout::data_key_key(&from));
        let rt = raw_get(db, &layout::secret_key(&from, Field::RefreshToken));
        db.insert(layout::data_key_key(&to), dk).unwrap();
        db.insert(layout::secret_key(&to, Field::RefreshToken), rt)
            .unwrap();
    });
    let vault = open(dir.path());
    let err = open_fails(&vault, &to, Field::RefreshToken);
    assert!(
        matches!(err, VaultError::Tampered(Record::DataKey(ref s)) if *s == to),
        "{err}"
    );
}

#[test]
fn data_keys_swapped_between_connectors_fail_closed() {
    let dir = populated();
    let (a, b) = (Slot::consent("c1", 1), Slot::consent("c2", 1));
    with_raw_db(dir.path(), |db| {
        let dka = raw_get(db, &layout::data_key_key(&a));
        let dkb = raw_get(db, &layout::data_key_key(&b));
        db.insert(layout::data_key_key(&a), dkb).unwrap();
        db.insert(layout::data_key_key(&b), dka).unwrap();
    });
    let vault = open(dir.path());
    for slot in [&a, &b] {
        let err = open_fails(&vault, slot, Field::AccessToken);
        assert!(
            matches!(err, VaultError::Tampered(Record::DataKey(_))),
            "{err}"
        );
    }
    // Other slots are unaffected.
    assert_eq!(
        read(&vault, &Slot::consent("c1", 2), Field::AccessToken),
        VALUE
    );
}

#[test]
fn every_bit_flip_in_a_secret_record_fails_closed() {
    let dir = populated();
    let slot = Slot::consent("c2", 1);
    let key = layout::secret_key(&slot, Field::AccessToken);
    let original = with_raw_db(dir.path(), |db| raw_get(db, &key));
    // Header (version, id length, id), nonce, ciphertext and tag: flip one bit in each byte.
    for i in 0..original.len() {
        let mut bad = original.clone();
        bad[i] ^= 0x10;
        with_raw_db(dir.path(), |db| db.insert(&key, bad).unwrap());
        let vault = open(dir.path());
        let err = open_fails(&vault, &slot, Field::AccessToken);
        assert!(
            matches!(
                err,
                VaultError::Tampered(_)
                    | VaultError::Corrupt { .. }
                    | VaultError::UnknownKeyId { .. }
            ),
            "byte {i}: {err}"
        );
    }
    with_raw_db(dir.path(), |db| db.insert(&key, original).unwrap());
    assert_eq!(read(&open(dir.path()), &slot, Field::AccessToken), VALUE);
}

#[test]
fn bit_flips_in_a_wrapped_data_key_fail_closed() {
    let dir = populated();
    let slot = Slot::consent("c1", 2);
    let key = layout::data_key_key(&slot);
    let original = with_raw_db(dir.path(), |db| raw_get(db, &key));
    let header = 2 + "k1".len();
    // In the nonce, in the wrapped key, in the tag.
    for i in [
        header,
        header + 23,
        header + 24,
        original.len() - 17,
        original.len() - 1,
    ] {
        let mut bad = original.clone();
        bad[i] ^= 0x01;
        with_raw_db(dir.path(), |db| db.insert(&key, bad).unwrap());
        let vault = open(dir.path());
        let err = open_fails(&vault, &slot, Field::RefreshToken);
        assert!(
            matches!(err, VaultError::Tampered(Record::DataKey(_))),
            "byte {i}: {err}"
        );
    }
}

#[test]
fn unknown_key_id_in_a_data_key_header_is_a_typed_error() {
    let dir = populated();
    let slot = Slot::consent("c1", 1);
    let key = layout::data_key_key(&slot);
    with_raw_db(dir.path(), |db| {
        let mut v = raw_get(db, &key);
        assert_eq!(&v[1..4], b"\x02k1");
        v[3] = b'7';
        db.insert(&key, v).unwrap();
    });
    let vault = open(dir.path());
    let err = open_fails(&vault, &slot, Field::AccessToken);
    assert!(
        matches!(err, VaultError::UnknownKeyId { ref key_id, record: Record::DataKey(_) } if key_id == "k7"),
        "{err}"
    );
}

#[test]
fn an_existing_but_wrong_key_id_in_a_header_fails_authentication() {
    // The header is in the associated data: naming k2 for a data key wrapped by k1 fails.
    let dir = populated();
    open(dir.path()).rotate().unwrap();
    let slot = Slot::consent("c1", 1);
    let key = layout::data_key_key(&slot);
    with_raw_db(dir.path(), |db| {
        let mut v = raw_get(db, &key);
        v[3] = b'2';
        db.insert(&key, v).unwrap();
    });
    let err = open_fails(&open(dir.path()), &slot, Field::AccessToken);
    assert!(
        matches!(err, VaultError::Tampered(Record::DataKey(_))),
        "{err}"
    );
}

#[test]
fn a_deleted_kek_still_referenced_is_an_unknown_key_id() {
    let dir = populated();
    assert_eq!(open(dir.path()).rotate().unwrap().to_string(), "k2");
    with_raw_db(dir.path(), |db| {
        db.remove(layout::kek_key(&KeyId::parse("k1").unwrap()))
            .unwrap();
    });
    let vault = open(dir.path());
    let err = open_fails(&vault, &Slot::consent("c2", 1), Field::RefreshToken);
    assert!(
        matches!(err, VaultError::UnknownKeyId { ref key_id, .. } if key_id == "k1"),
        "{err}"
    );
}

#[test]
fn a_flipped_kek_refuses_start() {
    let dir = populated();
    let k1 = layout::kek_key(&KeyId::parse("k1").unwrap());
    with_raw_db(dir.path(), |db| {
        let mut v = raw_get(db, &k1);
        let last = v.len() - 1;
        v[last] ^= 0x80;
        db.insert(&k1, v).unwrap();
    });
    let err = Vault::open(dir.path(), master(1)).unwrap_err();
    assert!(matches!(err, VaultError::Tampered(Record::Kek(_))), "{err}");
}

#[test]
fn a_kek_record_copied_under_another_id_does_not_open() {
    let dir = populated();
    open(dir.path()).rotate().unwrap();
    let (k1, k2) = (KeyId::parse("k1").unwrap(), KeyId::parse("k2").unwrap());
    with_raw_db(dir.path(), |db| {
        let v = raw_get(db, &layout::kek_key(&k1));
        db.insert(layout::kek_key(&k2), v).unwrap();
    });
    let err = Vault::open(dir.path(), master(1)).unwrap_err();
    assert!(
        matches!(err, VaultError::Tampered(Record::Kek(id)) if id == k2),
        "{err}"
    );
}

#[test]
fn wrong_master_key_or_flipped_check_record_is_wrong_master_key() {
    let dir = populated();
    let err = Vault::open(dir.path(), master(2)).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    assert!(err.to_string().contains("refusing to start"));
    with_raw_db(dir.path(), |db| {
        let mut v = raw_get(db, b"m/check");
        v[10] ^= 1;
        db.insert(b"m/check", v).unwrap();
    });
    let err = Vault::open(dir.path(), master(1)).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
}
