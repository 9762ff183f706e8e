//! OAuth leaves the connector service calls: the egress guard, discovery and dynamic client
//! registration.
//!
//! - [`egress`] — the SSRF guard (S3): the only way to reach a provider. Every other module here
//!   takes an [`egress::EgressClient`] and never builds its own HTTP client.
//! - [`discovery`] — RFC 9728 protected-resource metadata, RFC 8414 / OIDC authorization-server
//!   metadata in the MCP spec's probe order, admin overrides (S1, S2).
//! - [`cimd`] — OAuth Client ID Metadata Documents: AGP's client id URL per connector and the
//!   document served at it.
//! - [`registration`] — RFC 7591 dynamic registration as a confidential web client.
//! - [`text`] — cleaning provider-supplied text for messages.
//!
//! Nothing here touches the event log or the vault: results are values the caller turns into
//! events (non-secret parts) and sealed vault entries (secrets, as `SecretString`). No secret is
//! ever put in an error, a log line or a `Debug` output.

pub mod cimd;
pub mod discovery;
pub mod egress;
pub mod registration;
pub mod text;
