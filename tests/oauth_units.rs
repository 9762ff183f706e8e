//! Integration tests of the OAuth leaves: the egress guard, discovery and dynamic client
//! registration, against in-process axum servers.
//!
//! Every server binds a loopback address; the clients allowlist only `127.0.0.1/32`. No test
//! opens a connection to any non-loopback address: other ranges are tested on the classifier
//! and the URL check alone. One test binary; each area is a module under `tests/oauth_units/`.

// Test helpers are not `#[test]` functions, so `allow-unwrap-in-tests` does not reach them.
#![allow(clippy::unwrap_used)]

#[path = "oauth_units/helpers.rs"]
mod helpers;

#[path = "oauth_units/fixtures.rs"]
mod fixtures;

#[path = "oauth_units/discovery_as.rs"]
mod discovery_as;
#[path = "oauth_units/discovery_prm.rs"]
mod discovery_prm;
#[path = "oauth_units/egress.rs"]
mod egress;
#[path = "oauth_units/registration.rs"]
mod registration;
