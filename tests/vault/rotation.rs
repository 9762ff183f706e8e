//! Rotation: new seals use the new KEK, `rewrap_pending` moves old data keys in bounded steps,
//! a KEK is retired only when nothing references it, and stopping (or crashing) part-way
//! leaves everything readable.

use std::path::Path;

use agp::vault::{Field, KeyId, KeyUsage, Slot, Vault, VaultError, layout};

use crate::helpers::{files_containing, open, raw_get, read, secret, with_raw_db};

fn k(n: u64) -> KeyId {
    KeyId::parse(&format!("k{n}")).expect("key id")
}

fn slots(range: std::ops::Range<u64>) -> Vec<Slot> {
    range.map(|g| Slot::consent("conn", g)).collect()
}

fn header_key_id(dir: &Path, slot: &Slot) -> String {
    with_raw_db(dir, |db| {
        let v = raw_get(db, &layout::data_key_key(slot));
        String::from_utf8(v[2..2 + usize::from(v[1])].to_vec()).expect("utf-8 key id")
    })
}

fn usage(pairs: &[(u64, usize)]) -> Vec<KeyUsage> {
    pairs
        .iter()
        .map(|&(n, data_keys)| KeyUsage {
            key_id: k(n),
            data_keys,
        })
        .collect()
}

#[test]
fn rotate_rewrap_and_retire() {
    let dir = tempfile::tempdir().unwrap();
    let old_slots = slots(1..4);
    let vault = open(dir.path());
    for s in &old_slots {
        vault
            .seal(
                s,
                Field::RefreshToken,
                &secret(&format!("rt-{}", s.generation)),
            )
            .unwrap();
    }
    assert_eq!(vault.rotate().unwrap(), k(2));
    let new_slot = Slot::consent("conn", 9);
    vault
        .seal(&new_slot, Field::RefreshToken, &secret("rt-9"))
        .unwrap();
    // Sealing into an old slot keeps its (old-KEK) data key: only new data keys use k2.
    vault
        .seal(&old_slots[0], Field::AccessToken, &secret("at-1"))
        .unwrap();
    let status = vault.status().unwrap();
    assert_eq!(status.active_key_id, k(2));
    assert_eq!(status.keys, usage(&[(1, 3), (2, 1)]));
    assert_eq!(status.pending_rewrap, 3);
    drop(vault);
    assert_eq!(header_key_id(dir.path(), &new_slot), "k2");
    assert_eq!(header_key_id(dir.path(), &old_slots[0]), "k1");
    let k1_record = with_raw_db(dir.path(), |db| raw_get(db, &layout::kek_key(&k(1))));

    let vault = open(dir.path());
    assert_eq!(vault.rewrap_pending(2).unwrap(), 2);
    let status = vault.status().unwrap();
    assert_eq!(
        status.keys,
        usage(&[(1, 1), (2, 3)]),
        "k1 kept while referenced"
    );
    assert_eq!(status.pending_rewrap, 1);
    assert_eq!(vault.rewrap_pending(10).unwrap(), 1);
    let status = vault.status().unwrap();
    assert_eq!(status.keys, usage(&[(2, 4)]), "k1 retired once unused");
    assert_eq!(status.pending_rewrap, 0);
    assert_eq!(vault.rewrap_pending(10).unwrap(), 0);

    for s in &old_slots {
        assert_eq!(
            read(&vault, s, Field::RefreshToken),
            format!("rt-{}", s.generation)
        );
    }
    assert_eq!(read(&vault, &old_slots[0], Field::AccessToken), "at-1");
    assert_eq!(read(&vault, &new_slot, Field::RefreshToken), "rt-9");
    // The retired KEK's sealed bytes were compacted away.
    assert!(files_containing(dir.path(), &k1_record).is_empty());
    drop(vault);
    assert_eq!(header_key_id(dir.path(), &old_slots[2]), "k2");
    let vault = open(dir.path());
    assert_eq!(read(&vault, &old_slots[2], Field::RefreshToken), "rt-3");
    // Key ids are never reused.
    assert_eq!(vault.rotate().unwrap(), k(3));
}

#[test]
fn stopping_part_way_through_a_rewrap_leaves_everything_readable() {
    let dir = tempfile::tempdir().unwrap();
    let all = slots(1..8);
    {
        let vault = open(dir.path());
        for s in &all {
            vault
                .seal(
                    s,
                    Field::AccessToken,
                    &secret(&format!("at-{}", s.generation)),
                )
                .unwrap();
        }
        vault.rotate().unwrap();
        vault.rotate().unwrap();
        // Re-wrapping stops after 3 (each re-wrap is flushed on its own): as after a crash.
        assert_eq!(vault.rewrap_pending(3).unwrap(), 3);
    }
    let vault = open(dir.path());
    let status = vault.status().unwrap();
    assert_eq!(status.active_key_id, k(3));
    assert_eq!(
        status.keys,
        usage(&[(1, 4), (3, 3)]),
        "unused k2 retired, k1 kept"
    );
    assert_eq!(status.pending_rewrap, 4);
    for s in &all {
        assert_eq!(
            read(&vault, s, Field::AccessToken),
            format!("at-{}", s.generation)
        );
    }
    while vault.rewrap_pending(2).unwrap() > 0 {}
    assert_eq!(vault.status().unwrap().keys, usage(&[(3, 7)]));
    for s in &all {
        assert_eq!(
            read(&vault, s, Field::AccessToken),
            format!("at-{}", s.generation)
        );
    }
}

#[test]
fn debris_of_a_crashed_compaction_is_scrubbed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let slot = Slot::client("c");
    {
        let vault = open(dir.path());
        vault
            .seal(&slot, Field::ClientSecret, &secret("cs-1"))
            .unwrap();
    }
    let current = layout::current_db_path(dir.path()).unwrap().unwrap();
    // A half-built next database, an old one never scrubbed, a CURRENT.tmp never renamed.
    for stale in ["db-0", "db-2"] {
        copy_dir(&current, &dir.path().join(stale));
    }
    std::fs::write(dir.path().join("CURRENT.tmp"), "db-2\n").unwrap();

    let vault = open(dir.path());
    assert!(!dir.path().join("db-0").exists());
    assert!(!dir.path().join("db-2").exists());
    assert!(!dir.path().join("CURRENT.tmp").exists());
    assert_eq!(read(&vault, &slot, Field::ClientSecret), "cs-1");
    // The next compaction builds db-2 afresh and works.
    vault.shred(&Slot::client("other")).unwrap();
    assert_eq!(read(&vault, &slot, Field::ClientSecret), "cs-1");
}

#[test]
fn current_naming_a_missing_database_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    std::fs::write(dir.path().join("CURRENT"), "db-9\n").unwrap();
    let err = Vault::open(dir.path(), crate::helpers::master(1)).unwrap_err();
    assert!(matches!(err, VaultError::CorruptLayout { .. }), "{err}");
    std::fs::write(dir.path().join("CURRENT"), "../elsewhere\n").unwrap();
    let err = Vault::open(dir.path(), crate::helpers::master(1)).unwrap_err();
    assert!(matches!(err, VaultError::CorruptLayout { .. }), "{err}");
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("read_dir") {
        let entry = entry.expect("entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).expect("copy");
        }
    }
}
