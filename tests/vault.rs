//! Integration tests of the vault (security.md S11–S13): tampering with raw sled records,
//! what is and is not on disk (the canary), master-key sources, rotation and re-wrapping,
//! crashes (`kill -9` during seals, rotations, re-wraps and shreds) and concurrency; and the
//! vault on a real PostgreSQL server (`postgres`, decision 0029).
//!
//! One test binary; each area is a module under `tests/vault/`. No test prints a secret:
//! assertion messages name paths, slots and fields only.

#[path = "vault/helpers.rs"]
mod helpers;
#[path = "support/postgres.rs"]
mod pg_server;

#[path = "vault/concurrency.rs"]
mod concurrency;
#[path = "vault/crash.rs"]
mod crash;
#[path = "vault/disk.rs"]
mod disk;
#[path = "vault/postgres.rs"]
mod postgres;
#[path = "vault/rotation.rs"]
mod rotation;
#[path = "vault/tamper.rs"]
mod tamper;
