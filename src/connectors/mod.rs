//! Connectors as a service: the orchestration between the admin API, the OAuth leaves
//! (discovery, registration, token exchange, refresh, revocation), the vault and the connector
//! aggregate. The aggregate decides; this module does the I/O around its decisions.
//! [`refusals`] rate-limits the audit records of refused consent callbacks (S5).

pub mod account;
pub mod flows;
pub mod injected;
pub mod pages;
pub mod refusals;
pub mod results;
pub mod revoke;
pub mod service;
pub mod token;
pub mod upstream;
