//! The vault on a real PostgreSQL server (`tests/support/postgres.rs` starts one per test),
//! decision 0029: round trips, the master key at open, two replicas (two database handles, two
//! runtimes and pools, as two processes have) sharing one vault, rotation and re-wrapping
//! across them, a shred's rows and bytes leaving the table files, concurrent shreds and seals,
//! a server restart and a server crash (acknowledged writes durable though the database's
//! default is asynchronous commit), a master-key rotation against a backup taken before it,
//! tampering, and no secret in any error.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use agp::store::postgres::{PgDatabase, PgOptions};
use agp::vault::{Field, MasterKeyConfig, Slot, Vault, VaultError};

use crate::helpers::{master, random_token, read, secret};
use crate::pg_server::TempPostgres;

/// A server with a fresh database for one test.
fn server() -> (TempPostgres, String) {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_test").expect("create database");
    (pg, url)
}

/// One replica's handle on the database: its own runtime thread, pool and migrations.
fn database(url: &str) -> Arc<PgDatabase> {
    database_in(url, "agp")
}

/// [`database`] on another PostgreSQL schema.
fn database_in(url: &str, schema: &str) -> Arc<PgDatabase> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let options = PgOptions {
        schema: schema.into(),
        ..PgOptions::new(url)
    };
    rt.block_on(PgDatabase::open(&options))
        .expect("open PgDatabase")
}

fn vault(url: &str) -> Vault {
    Vault::open_postgres(database(url), master(1)).expect("open the PostgreSQL vault")
}

/// One hex-encoded `bytea` column of the vault's tables, decoded (as an attacker with the
/// database would read it).
fn sealed(pg: &TempPostgres, sql: &str) -> Vec<u8> {
    let hex_text = pg.psql("agp_test", sql).expect("psql");
    hex::decode(hex_text.trim()).expect("hex")
}

fn count(pg: &TempPostgres, table: &str) -> u64 {
    pg.psql("agp_test", &format!("SELECT count(*) FROM agp.{table}"))
        .expect("psql")
        .parse()
        .expect("a count")
}

/// Every file of the server's data directory outside its WAL (`wal` false), or in it.
fn files(data_dir: &Path, wal: bool) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.is_file() {
                let in_wal = path
                    .strip_prefix(data_dir)
                    .is_ok_and(|p| p.starts_with("pg_wal"));
                if in_wal == wal {
                    out.push(path);
                }
            }
        }
    }
    out
}

/// The files among `files` that contain `needle`.
fn containing(files: &[PathBuf], needle: &[u8]) -> Vec<PathBuf> {
    assert!(needle.len() >= 16, "needle too short to be meaningful");
    files
        .iter()
        .filter(|p| {
            // Files may vanish while the server runs (temporary stats, unlinked segments).
            std::fs::read(p).is_ok_and(|bytes| memchr::memmem::find(&bytes, needle).is_some())
        })
        .cloned()
        .collect()
}

#[test]
fn pg_seal_open_replace_bytes_and_has() {
    let (_pg, url) = server();
    let v = vault(&url);
    let slot = Slot::consent("c1", 1);
    assert!(v.open_secret(&slot, Field::AccessToken).unwrap().is_none());
    assert!(!v.has(&slot, Field::AccessToken).unwrap());
    v.seal(&slot, Field::AccessToken, &secret("at-1")).unwrap();
    v.seal(&slot, Field::RefreshToken, &secret("rt-1")).unwrap();
    assert!(v.has(&slot, Field::AccessToken).unwrap());
    assert_eq!(read(&v, &slot, Field::AccessToken), "at-1");
    assert_eq!(read(&v, &slot, Field::RefreshToken), "rt-1");
    v.seal(&slot, Field::RefreshToken, &secret("rt-2")).unwrap();
    assert_eq!(read(&v, &slot, Field::RefreshToken), "rt-2");

    // Bytes, and a non-UTF-8 secret asked for as a string: typed error, no bytes.
    let client = Slot::client("c1");
    v.seal_bytes(&client, Field::ClientSecret, &[0xff, 0x00, 0xfe])
        .unwrap();
    let bytes = v
        .open_secret_bytes(&client, Field::ClientSecret)
        .unwrap()
        .unwrap();
    assert_eq!(
        secrecy::ExposeSecret::expose_secret(&bytes),
        &[0xff, 0x00, 0xfe]
    );
    assert!(matches!(
        v.open_secret(&client, Field::ClientSecret),
        Err(VaultError::NotUtf8(_))
    ));

    // The quarantine generation (u64::MAX) and a large secret (stored out of line, TOAST).
    let q = Slot::quarantine("c1");
    let big = "d".repeat(100_000);
    v.seal(&q, Field::QuarantineDiffs, &secret(&big)).unwrap();
    assert_eq!(read(&v, &q, Field::QuarantineDiffs), big);

    // PostgreSQL text cannot hold NUL: refused as an invalid slot, not a driver error.
    assert!(matches!(
        v.seal(&Slot::client("a\0b"), Field::ClientSecret, &secret("x")),
        Err(VaultError::InvalidSlot(_))
    ));

    // Secrets survive a reopen (another process starting later).
    drop(v);
    let v = vault(&url);
    assert_eq!(read(&v, &slot, Field::RefreshToken), "rt-2");
    assert_eq!(read(&v, &q, Field::QuarantineDiffs), big);
    assert!(format!("{v:?}").contains("keyring"));
}

#[test]
fn pg_wrong_or_missing_master_key_is_refused_at_open() {
    let (_pg, url) = server();
    let db = database(&url);
    let v = Vault::open_postgres(db.clone(), master(1)).unwrap();
    v.seal(&Slot::client("c"), Field::ClientSecret, &secret("cs"))
        .unwrap();
    let err = Vault::open_postgres(db.clone(), master(2)).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    assert!(err.is_key_problem());

    // With a database there is no key-file fallback: the key must be given explicitly.
    let err = agp::vault::open_for_database(db.clone(), MasterKeyConfig::default()).unwrap_err();
    assert!(matches!(err, VaultError::MasterKeyRequired), "{err}");
    assert!(err.is_key_problem());
    let wrong = MasterKeyConfig {
        value: Some(hex::encode([2u8; 32]).into()),
        file: None,
    };
    let err = agp::vault::open_for_database(db.clone(), wrong).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    let right = MasterKeyConfig {
        value: Some(hex::encode([1u8; 32]).into()),
        file: None,
    };
    let (v2, source) = agp::vault::open_for_database(db, right).unwrap();
    assert_eq!(source, agp::vault::MasterKeySource::Env);
    assert_eq!(read(&v2, &Slot::client("c"), Field::ClientSecret), "cs");
}

#[test]
fn pg_two_replicas_see_each_others_writes() {
    let (_pg, url) = server();
    // Two handles opened at once: one creates the vault, the other finds it (the advisory
    // lock makes the creation happen once).
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| vault(&url));
        let b = s.spawn(|| vault(&url));
        (a.join().unwrap(), b.join().unwrap())
    });
    let slot = Slot::consent("c", 1);
    a.seal(&slot, Field::RefreshToken, &secret("rt-1")).unwrap();
    assert_eq!(read(&b, &slot, Field::RefreshToken), "rt-1");
    // A refresh on B rotates the refresh token; A reads the new one at once.
    b.seal(&slot, Field::RefreshToken, &secret("rt-2")).unwrap();
    assert_eq!(read(&a, &slot, Field::RefreshToken), "rt-2");
    // Both sealed under one data key, whichever replica created it.
    b.seal(&slot, Field::AccessToken, &secret("at-2")).unwrap();
    assert_eq!(read(&a, &slot, Field::AccessToken), "at-2");
    assert_eq!(a.status().unwrap(), b.status().unwrap());
    assert_eq!(a.status().unwrap().keys.len(), 1);
}

#[test]
fn pg_rotation_and_rewrap_across_two_replicas() {
    let (_pg, url) = server();
    let (a, b) = (vault(&url), vault(&url));
    for i in 0..5 {
        let s = Slot::consent("c", i + 1);
        a.seal(&s, Field::AccessToken, &secret(&format!("at-{i}")))
            .unwrap();
    }
    let k2 = b.rotate().unwrap();
    assert_eq!(k2.to_string(), "k2");
    // A learns of the rotation at its next write: its new data key is wrapped by k2.
    a.seal(&Slot::consent("d", 1), Field::AccessToken, &secret("d-1"))
        .unwrap();
    let status = a.status().unwrap();
    assert_eq!(status.active_key_id, k2);
    assert_eq!(status.pending_rewrap, 5);
    assert_eq!(b.rewrap_pending(2).unwrap(), 2);
    assert_eq!(a.status().unwrap().pending_rewrap, 3);
    assert_eq!(a.rewrap_pending(100).unwrap(), 3);
    // k1 is retired: every replica sees one key, and every secret still opens on both.
    for v in [&a, &b] {
        let status = v.status().unwrap();
        assert_eq!(status.pending_rewrap, 0);
        assert_eq!(
            status.keys.iter().map(|k| k.key_id).collect::<Vec<_>>(),
            vec![k2]
        );
        for i in 0..5 {
            let s = Slot::consent("c", i + 1);
            assert_eq!(read(v, &s, Field::AccessToken), format!("at-{i}"));
        }
    }
    // A rotation by A while B holds a stale cache: B's next seal and read use the new key.
    let k3 = a.rotate().unwrap();
    b.seal(&Slot::consent("e", 1), Field::AccessToken, &secret("e-1"))
        .unwrap();
    assert_eq!(b.status().unwrap().active_key_id, k3);
    assert_eq!(read(&a, &Slot::consent("e", 1), Field::AccessToken), "e-1");
}

#[test]
fn pg_shred_removes_rows_and_bytes_from_the_table_files() {
    let (pg, url) = server();
    let a = vault(&url);
    let b = vault(&url);
    let gone = Slot::consent("c", 1);
    let kept = Slot::consent("c", 2);
    let canary = random_token("canary-rt-");
    a.seal(&gone, Field::RefreshToken, &secret(&canary))
        .unwrap();
    a.seal(&gone, Field::AccessToken, &secret("at-gone"))
        .unwrap();
    a.seal(&kept, Field::AccessToken, &secret("at-kept"))
        .unwrap();
    let where_slot = "connector_id = 'c' AND generation = 1";
    let ciphertext = sealed(
        &pg,
        &format!(
            "SELECT encode(sealed, 'hex') FROM agp.vault_secrets \
             WHERE {where_slot} AND field = 'refresh_token'"
        ),
    );
    let wrapped_key = sealed(
        &pg,
        &format!("SELECT encode(sealed, 'hex') FROM agp.vault_data_keys WHERE {where_slot}"),
    );
    let old_kek = sealed(&pg, "SELECT encode(sealed, 'hex') FROM agp.vault_keys");
    // Control: once the pages are written, the sealed bytes are in the table files.
    pg.psql("agp_test", "CHECKPOINT").unwrap();
    let tables = files(&pg.data_dir(), false);
    for (what, bytes) in [
        ("ciphertext", &ciphertext),
        ("wrapped data key", &wrapped_key),
    ] {
        assert!(
            !containing(&tables, bytes).is_empty(),
            "control: the {what} should be in a table file before the shred"
        );
    }
    assert!(
        containing(&tables, canary.as_bytes()).is_empty(),
        "plaintext on disk"
    );

    let shredded = b.shred(&gone).unwrap();
    assert_eq!((shredded.data_keys, shredded.secrets), (1, 2));
    assert!(a.open_secret(&gone, Field::RefreshToken).unwrap().is_none());
    assert!(!a.has(&gone, Field::AccessToken).unwrap());
    assert_eq!(read(&a, &kept, Field::AccessToken), "at-kept");
    assert_eq!(count(&pg, "vault_secrets"), 1);
    assert_eq!(count(&pg, "vault_data_keys"), 1);
    // The KEK that wrapped the destroyed data key is retired: one new key wraps what is left.
    let status = a.status().unwrap();
    assert_eq!(status.active_key_id.to_string(), "k2");
    assert_eq!(status.keys.len(), 1);
    assert_eq!(count(&pg, "vault_keys"), 1);

    pg.psql("agp_test", "CHECKPOINT").unwrap();
    let tables = files(&pg.data_dir(), false);
    for (what, bytes) in [
        ("ciphertext", &ciphertext),
        ("wrapped data key", &wrapped_key),
        ("retired key-encryption key", &old_kek),
    ] {
        let found = containing(&tables, bytes);
        assert!(
            found.is_empty(),
            "the shredded {what} is still in {found:?}"
        );
    }
    // No dead tuple either (pgstattuple reads the pages; the statistics views are not
    // updated by VACUUM FULL). Optional: skipped where contrib is not installed.
    if pg
        .psql("agp_test", "CREATE EXTENSION IF NOT EXISTS pgstattuple")
        .is_ok()
    {
        for table in ["vault_secrets", "vault_data_keys", "vault_keys"] {
            let dead = pg
                .psql(
                    "agp_test",
                    &format!("SELECT dead_tuple_count FROM pgstattuple('agp.{table}')"),
                )
                .unwrap();
            assert_eq!(dead, "0", "dead tuples left in {table}");
        }
    }
    // The limit decision 0029 states: the WAL still holds them (until recycled or archived).
    let wal = files(&pg.data_dir(), true);
    assert!(
        !containing(&wal, &wrapped_key).is_empty(),
        "expected the WAL to still hold the wrapped data key (decision 0029's limit)"
    );

    // A retried shred (e.g. after a failed VACUUM) finishes without error or change.
    assert_eq!(b.shred(&gone).unwrap(), Default::default());
    assert_eq!(read(&b, &kept, Field::AccessToken), "at-kept");
}

#[test]
fn pg_shred_connector_and_except() {
    let (pg, url) = server();
    let v = vault(&url);
    for g in 0..4 {
        let s = Slot::consent("c", g);
        v.seal(&s, Field::AccessToken, &secret(&format!("c-{g}")))
            .unwrap();
        v.seal(&Slot::consent("other", g), Field::AccessToken, &secret("o"))
            .unwrap();
    }
    let s = v.shred_connector_except("c", &[0, 2]).unwrap();
    assert_eq!((s.data_keys, s.secrets), (2, 2));
    assert_eq!(read(&v, &Slot::consent("c", 0), Field::AccessToken), "c-0");
    assert_eq!(read(&v, &Slot::consent("c", 2), Field::AccessToken), "c-2");
    assert!(
        v.open_secret(&Slot::consent("c", 1), Field::AccessToken)
            .unwrap()
            .is_none()
    );
    let s = v.shred_connector("c").unwrap();
    assert_eq!((s.data_keys, s.secrets), (2, 2));
    assert_eq!(count(&pg, "vault_data_keys"), 4);
    for g in 0..4 {
        assert_eq!(
            read(&v, &Slot::consent("other", g), Field::AccessToken),
            "o"
        );
    }
    assert_eq!(v.status().unwrap().keys.len(), 1);
}

#[test]
fn pg_concurrent_shreds_and_seals_from_two_replicas() {
    let (_pg, url) = server();
    let (a, b) = (vault(&url), vault(&url));
    const ROUNDS: u64 = 12;
    std::thread::scope(|s| {
        // A seals slots "keep-*" and "gone-*"; B shreds the "gone-*" ones as they appear,
        // rotating and retiring keys under A's feet.
        s.spawn(|| {
            for i in 0..ROUNDS {
                a.seal(
                    &Slot::consent("keep", i + 1),
                    Field::AccessToken,
                    &secret(&format!("k{i}")),
                )
                .unwrap();
                a.seal(
                    &Slot::consent("gone", i + 1),
                    Field::AccessToken,
                    &secret("g"),
                )
                .unwrap();
            }
        });
        s.spawn(|| {
            for i in 0..ROUNDS {
                b.shred(&Slot::consent("gone", i + 1)).unwrap();
                b.seal(
                    &Slot::consent("b", i + 1),
                    Field::RefreshToken,
                    &secret(&format!("b{i}")),
                )
                .unwrap();
            }
        });
    });
    b.shred_connector("gone").unwrap();
    // A third process (fresh cache) opens everything that was not shredded: no data key was
    // wrapped by a KEK a concurrent shred retired.
    let c = vault(&url);
    for i in 0..ROUNDS {
        assert_eq!(
            read(&c, &Slot::consent("keep", i + 1), Field::AccessToken),
            format!("k{i}")
        );
        assert_eq!(
            read(&c, &Slot::consent("b", i + 1), Field::RefreshToken),
            format!("b{i}")
        );
        assert!(
            c.open_secret(&Slot::consent("gone", i + 1), Field::AccessToken)
                .unwrap()
                .is_none()
        );
    }
    let status = c.status().unwrap();
    assert_eq!(status.pending_rewrap, 0);
    assert_eq!(status.keys.len(), 1);
    assert_eq!(a.status().unwrap(), status);
}

#[test]
fn pg_server_restart_fails_clearly_then_recovers_and_errors_hold_no_secret() {
    let (mut pg, url) = server();
    let v = vault(&url);
    let slot = Slot::consent("c", 1);
    let canary = random_token("canary-");
    v.seal(&slot, Field::RefreshToken, &secret(&canary))
        .unwrap();

    pg.stop().unwrap();
    let mut errors = Vec::new();
    let err = v
        .seal(&slot, Field::RefreshToken, &secret(&canary))
        .unwrap_err();
    assert!(matches!(err, VaultError::Database(_)), "{err}");
    assert!(err.to_string().contains("PostgreSQL"), "{err}");
    errors.push(err);
    errors.push(v.open_secret(&slot, Field::RefreshToken).unwrap_err());
    errors.push(v.shred(&slot).unwrap_err());
    errors.push(v.rotate().unwrap_err());

    pg.restart().unwrap();
    // The pool replaces its dead connections: within a few calls everything works again.
    let mut recovered = false;
    for _ in 0..10 {
        match v.open_secret(&slot, Field::RefreshToken) {
            Ok(Some(s)) => {
                assert_eq!(secrecy::ExposeSecret::expose_secret(&s), canary);
                recovered = true;
                break;
            }
            Ok(None) => panic!("the sealed secret is gone after a restart"),
            Err(e) => errors.push(e),
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(
        recovered,
        "the vault did not recover after the server restarted"
    );
    v.seal(&slot, Field::AccessToken, &secret("at")).unwrap();

    // A wrong key too: a typed error; no error's text or Debug holds a secret.
    errors.push(Vault::open_postgres(database(&url), master(9)).unwrap_err());
    assert!(errors.len() >= 5);
    for e in &errors {
        let text = format!("{e} {e:?}");
        assert!(!text.contains(&canary), "an error carries the secret: {e}");
        assert!(
            !text.contains(&hex::encode([1u8; 32])),
            "an error carries the master key"
        );
    }
}

#[test]
fn pg_a_secret_moved_to_another_slot_fails_closed() {
    let (pg, url) = server();
    let v = vault(&url);
    v.seal(&Slot::consent("a", 1), Field::AccessToken, &secret("for-a"))
        .unwrap();
    v.seal(&Slot::consent("b", 1), Field::AccessToken, &secret("for-b"))
        .unwrap();
    // An attacker with write access to the table swaps the ciphertexts of two slots.
    pg.psql(
        "agp_test",
        "UPDATE agp.vault_secrets s SET sealed = o.sealed FROM agp.vault_secrets o \
         WHERE s.connector_id <> o.connector_id",
    )
    .unwrap();
    for c in ["a", "b"] {
        let err = v
            .open_secret(&Slot::consent(c, 1), Field::AccessToken)
            .unwrap_err();
        assert!(matches!(err, VaultError::Tampered(_)), "{err}");
    }
}

#[test]
fn pg_rekey_leaves_a_backup_from_before_to_the_old_key_only() {
    let (pg, url) = server();
    let (a, b) = (vault(&url), vault(&url));
    let slot = Slot::consent("c", 1);
    let canary = random_token("canary-");
    a.seal(&slot, Field::RefreshToken, &secret(&canary))
        .unwrap();
    a.rotate().unwrap();
    // A backup taken before the rotation: the vault's tables copied into another schema.
    let tables = [
        "schema_migrations",
        "vault_meta",
        "vault_keys",
        "vault_data_keys",
        "vault_secrets",
    ];
    let copy: Vec<String> = tables
        .iter()
        .map(|t| format!("CREATE TABLE backup.{t} AS SELECT * FROM agp.{t}"))
        .collect();
    pg.psql(
        "agp_test",
        &format!("CREATE SCHEMA backup; {}", copy.join("; ")),
    )
    .unwrap();

    let id = a.rekey(master(2)).unwrap();
    assert_eq!(read(&a, &slot, Field::RefreshToken), canary);
    let status = a.status().unwrap();
    assert_eq!((status.keys.len(), status.active_key_id), (1, id));
    // A replica still running with the old key fails closed, and says why.
    let err = b.open_secret(&slot, Field::RefreshToken).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    // The live database: the new key opens it, the old one is refused.
    let err = Vault::open_postgres(database(&url), master(1)).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    let c = Vault::open_postgres(database(&url), master(2)).unwrap();
    assert_eq!(read(&c, &slot, Field::RefreshToken), canary);
    // No KEK of the backup is left in the live database.
    let live = pg
        .psql(
            "agp_test",
            "SELECT string_agg(id::text, ',') FROM agp.vault_keys",
        )
        .unwrap();
    let old = pg
        .psql(
            "agp_test",
            "SELECT string_agg(id::text, ',') FROM backup.vault_keys",
        )
        .unwrap();
    assert_eq!(live, id.number().to_string());
    assert!(!old.split(',').any(|k| k == live), "{old} / {live}");
    // The backup: the new key does not open it; the old one still does — the limit that
    // destroying the old key closes (decision 0029).
    let err = Vault::open_postgres(database_in(&url, "backup"), master(2)).unwrap_err();
    assert!(matches!(err, VaultError::WrongMasterKey), "{err}");
    let restored = Vault::open_postgres(database_in(&url, "backup"), master(1)).unwrap();
    assert_eq!(read(&restored, &slot, Field::RefreshToken), canary);
}

#[test]
fn pg_acknowledged_writes_survive_a_server_crash_when_the_default_is_async_commit() {
    let (mut pg, url) = server();
    // The database's default loses the last fraction of a second of commits in a crash; the
    // vault sets synchronous_commit = on on each of its transactions.
    pg.psql(
        "agp_test",
        "ALTER DATABASE agp_test SET synchronous_commit = off",
    )
    .unwrap();
    assert_eq!(
        pg.psql("agp_test", "SHOW synchronous_commit").unwrap(),
        "off"
    );
    let v = vault(&url);
    const N: u64 = 150;
    // A shred first (its VACUUM's commit would flush the WAL of every write before it).
    v.seal(&Slot::consent("c", 1), Field::RefreshToken, &secret("rt-1"))
        .unwrap();
    v.shred(&Slot::consent("c", 1)).unwrap();
    for i in 2..=N {
        v.seal(
            &Slot::consent("c", i),
            Field::RefreshToken,
            &secret(&format!("rt-{i}")),
        )
        .unwrap();
    }
    // A refresh-token rotation, acknowledged just before the crash.
    v.seal(
        &Slot::consent("c", N),
        Field::RefreshToken,
        &secret("rt-rotated"),
    )
    .unwrap();
    pg.crash().unwrap();
    drop(v);
    pg.restart().unwrap();

    let v = vault(&url);
    assert!(
        v.open_secret(&Slot::consent("c", 1), Field::RefreshToken)
            .unwrap()
            .is_none()
    );
    for i in 2..N {
        assert_eq!(
            read(&v, &Slot::consent("c", i), Field::RefreshToken),
            format!("rt-{i}")
        );
    }
    assert_eq!(
        read(&v, &Slot::consent("c", N), Field::RefreshToken),
        "rt-rotated"
    );
    assert_eq!(v.status().unwrap().pending_rewrap, 0);
}
