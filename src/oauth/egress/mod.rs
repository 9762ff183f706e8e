//! The egress guard (S3): the only way AGP makes an outbound HTTP request on an admin's or an
//! upstream's behalf.
//!
//! Owns the destination policy ([`EgressPolicy`]), the address classifier ([`classify`]), the
//! guarded client ([`EgressClient`]) and capped body readers ([`read_capped`],
//! [`get_json_capped`]).
//!
//! Invariants:
//! - https only; plain http only to addresses inside an allowlisted CIDR.
//! - Every destination address is checked at connect time: names through a resolver that drops
//!   refused addresses (so DNS rebinding cannot reach them), IP literals before the request.
//!   Loopback, private, link-local, CGNAT, ULA, documentation and reserved space is refused
//!   unless allowlisted; unspecified, multicast and broadcast are refused always.
//! - No redirects are followed (a 3xx is an error), no ambient proxy, connect and total
//!   timeouts, every body read is capped.
//! - Errors name the host and the reason, never a path's query string (it may hold secrets).
//!
//! The allowlist is off by default; `--egress-allow CIDR` / `AGP_EGRESS_ALLOW` (comma-separated)
//! enable it for tests and internal deployments.

mod body;
mod classify;
mod client;

use std::net::IpAddr;
use std::time::Duration;

use ipnet::IpNet;

pub(crate) use body::parse_json;
pub use body::{
    JSON_MAX_DEPTH, METADATA_CAP, TOKEN_RESPONSE_CAP, get_json_capped, json_within_depth,
    read_capped, read_json_capped,
};
pub use classify::{AddrClass, classify};
pub use client::{EgressClient, GuardedRequest, Lookup, Route, SystemLookup};

/// Which destinations outbound requests may reach beyond the public internet.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EgressPolicy {
    /// Non-public ranges that are reachable anyway (and over plain http). Empty by default.
    pub allow: Vec<IpNet>,
}

/// The environment variable that carries the allowlist (comma-separated CIDRs).
pub const EGRESS_ALLOW_ENV: &str = "AGP_EGRESS_ALLOW";

impl EgressPolicy {
    /// Parse `--egress-allow` values; each may itself be comma-separated. A bare address is a
    /// single-host range (`/32`, `/128`). Empty items are ignored.
    pub fn parse<S: AsRef<str>>(values: &[S]) -> Result<Self, EgressError> {
        let mut allow = Vec::new();
        for value in values {
            for item in value.as_ref().split(',') {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                let net = match item.parse::<IpNet>() {
                    Ok(net) => net.trunc(),
                    Err(_) => match item.parse::<IpAddr>() {
                        Ok(ip) => IpNet::from(ip),
                        Err(_) => {
                            return Err(EgressError::InvalidAllowlist {
                                item: crate::oauth::text::clean(item, 64),
                            });
                        }
                    },
                };
                allow.push(net);
            }
        }
        Ok(Self { allow })
    }

    /// The allowlist from `AGP_EGRESS_ALLOW`, if set (an unset variable is an empty policy).
    pub fn from_env() -> Result<Self, EgressError> {
        match std::env::var(EGRESS_ALLOW_ENV) {
            Ok(v) => Self::parse(&[v]),
            Err(_) => Ok(Self::default()),
        }
    }

    /// Whether `ip` is inside an allowlisted range (checked on the embedded IPv4 address for
    /// v4-mapped IPv6 too).
    pub fn allowlisted(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        !classify(ip).never_connectable() && self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Whether a connection to `ip` is allowed over https: public addresses always, others only
    /// when allowlisted.
    pub fn permits(&self, ip: IpAddr) -> bool {
        classify(ip) == AddrClass::Public || self.allowlisted(ip)
    }
}

/// v4-mapped IPv6 addresses compare against IPv4 ranges.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Connect and total timeouts for the guarded client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressTimeouts {
    /// TCP connect (and, with it, DNS) budget.
    pub connect: Duration,
    /// Whole request: connect, TLS, headers and the body read. Bounds a trickling peer.
    pub total: Duration,
}

impl Default for EgressTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            total: Duration::from_secs(20),
        }
    }
}

/// Why an outbound request was refused or failed. `host` is the URL's host only: never the
/// path or query. Every variant surfaces to the admin as a failed discovery/registration step
/// (HTTP 502 at the API).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EgressError {
    /// An `--egress-allow` item is not a CIDR or an address (startup error).
    #[error("invalid --egress-allow entry {item:?}: expected a CIDR such as 127.0.0.1/32")]
    InvalidAllowlist { item: String },
    /// The URL is not absolute or has no host.
    #[error("invalid URL: {reason}")]
    InvalidUrl { reason: String },
    /// Not https, or http to a destination that is not allowlisted.
    #[error(
        "{scheme}:// to {host} refused: only https is allowed (plain http only to allowlisted addresses)"
    )]
    SchemeRefused { host: String, scheme: String },
    /// The destination address (a literal, or every address a name resolved to) is refused.
    #[error("destination {host} refused: {class} address not allowed by the egress policy")]
    AddressRefused { host: String, class: AddrClass },
    /// The name did not resolve.
    #[error("could not resolve {host}: {detail}")]
    Resolve { host: String, detail: String },
    /// The connection or TLS handshake failed.
    #[error("could not connect to {host}: {detail}")]
    Connect { host: String, detail: String },
    /// Connect or total timeout.
    #[error("request to {host} timed out")]
    Timeout { host: String },
    /// A 3xx answer; redirects are never followed.
    #[error("{host} answered {status} (a redirect): redirects are not followed")]
    Redirect { host: String, status: u16 },
    /// A status the caller did not accept.
    #[error("{host} answered HTTP {status}")]
    Status { host: String, status: u16 },
    /// The body is larger than the cap (declared or streamed).
    #[error("response from {host} exceeds the {cap}-byte limit")]
    TooLarge { host: String, cap: usize },
    /// Not a JSON media type.
    #[error("response from {host} is not JSON (content type {content_type:?})")]
    ContentType { host: String, content_type: String },
    /// Malformed JSON, nesting too deep, or not the expected shape.
    #[error("response from {host} is not valid JSON: {detail}")]
    Json { host: String, detail: String },
    /// Any other transport failure.
    #[error("request to {host} failed: {detail}")]
    Http { host: String, detail: String },
}

impl EgressError {
    /// Whether the failure is about this one document (try the next well-known location), as
    /// opposed to the destination itself being refused or unreachable.
    pub fn is_document_miss(&self) -> bool {
        matches!(
            self,
            EgressError::Status { .. }
                | EgressError::Redirect { .. }
                | EgressError::ContentType { .. }
                | EgressError::Json { .. }
                | EgressError::TooLarge { .. }
        )
    }
}

/// The host of a URL for messages (never the path or query).
pub(crate) fn host_of(url: &url::Url) -> String {
    match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => "(no host)".to_string(),
    }
}

/// A URL for a human log line: scheme, host, port and path; a query is shown as `?…`.
pub fn redacted(url: &url::Url) -> String {
    let mut s = format!("{}://{}{}", url.scheme(), host_of(url), url.path());
    if url.query().is_some() {
        s.push_str("?…");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_parses_cidrs_addresses_and_commas() {
        let p = EgressPolicy::parse(&["127.0.0.1/32, 10.0.0.0/8", "::1"]).unwrap();
        assert_eq!(p.allow.len(), 3);
        assert!(p.permits("127.0.0.1".parse().unwrap()));
        assert!(!p.permits("127.0.0.2".parse().unwrap()));
        assert!(p.permits("10.9.9.9".parse().unwrap()));
        assert!(p.permits("::1".parse().unwrap()));
        assert!(p.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(p.permits("8.8.8.8".parse().unwrap()));
        assert!(EgressPolicy::parse(&["nope"]).is_err());
        assert!(EgressPolicy::parse(&["10.0.0.0/33"]).is_err());
    }

    #[test]
    fn default_policy_refuses_everything_non_public() {
        let p = EgressPolicy::default();
        for ip in ["127.0.0.1", "10.0.0.1", "169.254.169.254", "::1", "fd00::1"] {
            assert!(!p.permits(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn never_connectable_even_if_allowlisted() {
        let p = EgressPolicy::parse(&["0.0.0.0/0", "::/0"]).unwrap();
        assert!(!p.permits("0.0.0.0".parse().unwrap()));
        assert!(!p.permits("224.0.0.1".parse().unwrap()));
        assert!(!p.permits("255.255.255.255".parse().unwrap()));
        assert!(!p.permits("::".parse().unwrap()));
        assert!(p.permits("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn redacted_urls_hide_queries() {
        let u = url::Url::parse("https://h.example:8443/a/b?secret=1").unwrap();
        assert_eq!(redacted(&u), "https://h.example:8443/a/b?…");
    }
}
