//! Several threads sealing and opening different slots while another rotates, re-wraps and
//! shreds: every read sees the value its thread last wrote.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use agp::vault::{Field, Slot};

use crate::helpers::{open, read, secret};

#[test]
fn parallel_seals_and_opens_with_rotation_and_shredding() {
    let dir = tempfile::tempdir().unwrap();
    let vault = Arc::new(open(dir.path()));
    let stop = Arc::new(AtomicBool::new(false));

    let admin = {
        let (vault, stop) = (vault.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(Ordering::Relaxed) {
                vault.rotate().unwrap();
                vault.rewrap_pending(3).unwrap();
                vault.shred(&Slot::consent("scratch", rounds)).unwrap();
                rounds += 1;
            }
            rounds
        })
    };
    let workers: Vec<_> = (0..4u64)
        .map(|t| {
            let vault = vault.clone();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let slot = Slot::consent(format!("conn-{t}"), i % 5 + 1);
                    let value = format!("token-{t}-{i}");
                    vault
                        .seal(&slot, Field::AccessToken, &secret(&value))
                        .unwrap();
                    assert!(
                        read(&vault, &slot, Field::AccessToken) == value,
                        "thread {t} i {i}"
                    );
                    vault
                        .seal(
                            &Slot::consent("scratch", i),
                            Field::PkceVerifier,
                            &secret("v"),
                        )
                        .unwrap();
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(admin.join().unwrap() > 0);

    while vault.rewrap_pending(100).unwrap() > 0 {}
    let status = vault.status().unwrap();
    assert_eq!(status.keys.len(), 1, "only the active key is left");
    for t in 0..4u64 {
        for g in 1..=5u64 {
            // The last write to generation g was i = 35 + g - 1.
            let value = read(
                &vault,
                &Slot::consent(format!("conn-{t}"), g),
                Field::AccessToken,
            );
            assert!(
                value == format!("token-{t}-{}", 34 + g),
                "thread {t} generation {g}"
            );
        }
    }
}
