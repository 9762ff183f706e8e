//! AGP: a governance backend for the OAuth-protected MCP servers that AI agents use.
//!
//! # Layout
//!
//! Dependencies point one way: `domain ← store ← projections ← api, proxy ← app`.
//!
//! - [`canonical`] — canonical JSON (sorted keys): the leaf every layer hashes with.
//! - [`domain`] — aggregates (connector, profile with its policy, agent, approval), commands,
//!   events, errors; fact events (call records, security facts: key rotations, refused consent
//!   callbacks). Pure.
//! - [`store`] — the append-only, hash-chained event log on sled (and on PostgreSQL:
//!   `store::postgres`), its storage trait and conformance suite, the cqrs-es adapter, and archive segments (where old call records go,
//!   the chain whole); on a log several replicas share, unique names claimed in the log
//!   (`store::name_claims`). The only code that knows bytes on disk.
//! - [`projections`] — read models folded from the log with checkpoints: connector status,
//!   tool catalog, grants/visibility, audit log, approvals.
//! - [`retention`] — archive runs: call records older than a cut-off move from the live log
//!   into compressed, chain-anchored segments (the segments themselves: `store::archive`).
//! - [`checkpoints`] — signed audit checkpoints: the Ed25519 key sealed in the vault, the
//!   periodic checkpoint, the file and webhook sinks (the format and check: `store::checkpoint`).
//! - [`approvals`] — the approvals service: a held call's request, wait and decision, expiry
//!   and shredding of the sealed arguments, the webhook.
//! - [`oauth`] — leaves the connector service calls: the egress guard (SSRF, S3), RFC 9728 /
//!   8414 / OIDC discovery (S1, S2), RFC 7591 registration and the Client ID Metadata Document
//!   AGP serves per CIMD connector. Depends only on `domain` types.
//! - [`api`] — the admin REST API (axum, OpenAPI) and its auth; the API explorer (Swagger UI,
//!   its files inside the binary) at `/api/v1/docs`; request ids and the request span for every
//!   door (`api::request_id`), metrics.
//! - [`console`] — the admin console at `/console`: server-rendered pages over the same
//!   services as the API, with sessions, CSRF and a strict CSP.
//! - [`connectors`] — the connector service (add, consent callback, refresh, disconnect,
//!   tools, drift) and the consent flow table: in memory, or in PostgreSQL so a consent
//!   started on one replica completes on another (`connectors::flows`).
//! - [`proxy`] — the agents' MCP endpoint: tools/list and tools/call, policy enforcement,
//!   upstream sessions, scrubbing, call records.
//! - [`vault`] — sealed custody of OAuth secrets: envelope encryption (master key → KEKs →
//!   per-grant data keys), its own sled database under `DATA_DIR/vault` or tables in the
//!   replicas' PostgreSQL database, rotation (KEKs and the master key) and crypto-shredding;
//!   keys derived from the master key for named uses (`vault::derive`). A leaf: it knows
//!   nothing of the domain, the log or HTTP.
//! - [`app`] — wiring: config, data directory, start-up, graceful shutdown.
//! - [`cli`] — the `agp` command line: `serve`, and admin/auditor commands over the REST API
//!   (their request bodies are the API's own request types), the auditor commands also directly
//!   on a data directory or the PostgreSQL database, and `migrate` (a data directory's log into
//!   PostgreSQL, decision 0031); `healthcheck`, `completions`, `man`;
//!   `serve`'s logs and OTLP trace export (`cli::telemetry`, the `otlp` feature).

pub mod api;
pub mod app;
pub mod approvals;
pub mod canonical;
pub mod checkpoints;
pub mod cli;
pub mod cluster;
pub mod connectors;
pub mod console;
pub mod domain;
pub mod oauth;
pub mod projections;
pub mod proxy;
pub mod retention;
pub mod store;
pub mod vault;
