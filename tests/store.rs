//! Integration tests of the event log: conformance of both backends, reopen, tail and middle
//! corruption, an append a crash left unfinished, poisoning after a failed flush, durability
//! under `kill -9`, and on power loss (every ack after an fdatasync, seen by strace), and signed
//! checkpoints against an attacker who rewrites the log, and archive runs (retention); and the
//! log on a real PostgreSQL server (`postgres`: the conformance suite and more).
//!
//! One test binary; each area is a module under `tests/store/` (a crate root looks for
//! modules beside itself, hence the `#[path]`s).

#[path = "store/helpers.rs"]
mod helpers;
#[path = "support/postgres.rs"]
mod pg_server;

#[path = "store/archive.rs"]
mod archive;
#[path = "store/checkpoint.rs"]
mod checkpoint;
#[path = "store/conformance.rs"]
mod conformance;
#[path = "store/corruption.rs"]
mod corruption;
#[path = "store/crash.rs"]
mod crash;
#[path = "store/dictionary.rs"]
mod dictionary;
#[path = "store/poison.rs"]
mod poison;
#[path = "store/postgres.rs"]
mod postgres;
#[path = "store/postgres_archive.rs"]
mod postgres_archive;
#[path = "store/power_loss.rs"]
mod power_loss;
#[path = "store/reopen.rs"]
mod reopen;
#[path = "store/unfinished.rs"]
mod unfinished;
