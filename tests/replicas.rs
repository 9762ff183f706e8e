//! What several AGP replicas on one PostgreSQL database must agree on, each replica played by
//! its own handles on a real server (`tests/support/postgres.rs` starts one per test):
//! consent flows started on one replica and finished on another (`flows`), and names claimed
//! by the database so two replicas never create the same one (`names`).
//!
//! One test binary; each area is a module under `tests/replicas/`.

#[path = "support/postgres.rs"]
mod pg_server;

#[path = "replicas/flows.rs"]
mod flows;
#[path = "replicas/names.rs"]
mod names;
