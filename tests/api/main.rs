//! Integration tests of the admin API and CLI: the real server on port 0 with a fresh data
//! directory per test.

#![allow(clippy::unwrap_used)]

mod helpers;
mod mock_provider;
mod peers;
#[path = "../support/postgres.rs"]
mod pg_server;
mod process;

mod agents;
mod api_explorer;
mod approvals_e2e;
mod approvals_restart;
mod archive;
mod audit_queries;
mod bad_input;
mod checkpoints;
mod cimd_e2e;
mod cli;
mod cli_manual;
mod connector_account;
mod connectors_e2e;
mod connectors_mock;
mod console_e2e;
mod drift_e2e;
mod events;
mod kill_switches;
mod lifecycle;
mod log_leaks;
mod migrate;
mod profiles;
mod provider_quirks;
mod proxy_e2e;
mod replica_names;
mod replicas;
mod request_ids;
mod revocations;
mod sdk_auth_e2e;
mod servers_e2e;
mod tools;
mod tools_e2e;
mod unregister;
