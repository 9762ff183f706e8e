//! OAuth Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document; the MCP
//! authorization spec 2025-11-25 prefers them over DCR): AGP's Client Identifier URL for a
//! connector, and the metadata document served at it.
//!
//! One document per connector, at `<public-url>/.well-known/agp-client/<connector-id>`: the
//! document carries the connector's own `client_name` (what the consent screen shows, as with
//! DCR), and the connector id, never reused, keeps a removed connector's client identity from
//! passing to a later connector of the same name.
//!
//! Invariants:
//! - The URL is https, has no userinfo, query or fragment, and no `.`/`..` path segment. Plain
//!   http is accepted only in development, decided as the egress guard decides it: the public
//!   URL's host is a loopback address on the egress allowlist (`--egress-allow`).
//! - The document names no secret and no shared-secret method (`client_secret_*` are forbidden
//!   by the draft): AGP is a public client, `token_endpoint_auth_method: none`, PKCE protects
//!   the code. `client_id` is, as a string, the URL it is served at.
//!
//! Pure: no I/O.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::Serialize;
use url::Url;

use super::egress::EgressPolicy;

/// The path under the public URL where connectors' metadata documents are served.
pub const PATH_PREFIX: &str = "/.well-known/agp-client/";

/// Why AGP cannot present a Client Identifier URL. Surfaces as a failed `connectors add` (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdUrlError {
    #[error(
        "the client ID metadata document URL {url} is not https: a Client Identifier URL must \
         use https (plain http is accepted only in development, for a loopback public URL on the \
         egress allow list); set --public-url to AGP's https address"
    )]
    NotHttps { url: String },
    #[error("the client ID metadata document URL {url} is not usable: {reason}")]
    Invalid { url: String, reason: &'static str },
}

/// `<public_url>/.well-known/agp-client/<connector_id>`, checked against the draft's rules.
pub fn client_id_url(
    public_url: &str,
    connector_id: &str,
    policy: &EgressPolicy,
) -> Result<Url, CimdUrlError> {
    let raw = format!(
        "{}{PATH_PREFIX}{connector_id}",
        public_url.trim_end_matches('/')
    );
    let invalid = |reason| CimdUrlError::Invalid {
        url: crate::oauth::text::clean(&raw, 200),
        reason,
    };
    let dotted = raw
        .split(['?', '#'])
        .next()
        .unwrap_or_default()
        .split('/')
        .skip(3)
        .any(|seg| {
            let s = seg.to_ascii_lowercase().replace("%2e", ".");
            s == "." || s == ".."
        });
    if dotted {
        return Err(invalid("a path segment is . or .."));
    }
    let url = Url::parse(&raw).map_err(|_| invalid("not an absolute URL"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("it carries a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it has a query or a fragment"));
    }
    if url.host().is_none() {
        return Err(invalid("it has no host"));
    }
    match url.scheme() {
        "https" => Ok(url),
        "http" if development(&url, policy) => Ok(url),
        "http" => Err(CimdUrlError::NotHttps {
            url: url.to_string(),
        }),
        _ => Err(invalid("its scheme is neither https nor http")),
    }
}

/// Development, as the egress guard has it: plain http reaches only allowlisted addresses, and
/// a metadata document over http is accepted only when the public URL's host is a loopback
/// address (an IP literal, or `localhost`) on that allowlist.
fn development(url: &Url, policy: &EgressPolicy) -> bool {
    let ips: Vec<IpAddr> = match url.host() {
        Some(url::Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
        Some(url::Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
        Some(url::Host::Domain(d)) if d.eq_ignore_ascii_case("localhost") => {
            vec![
                IpAddr::V4(Ipv4Addr::LOCALHOST),
                IpAddr::V6(Ipv6Addr::LOCALHOST),
            ]
        }
        _ => return false,
    };
    ips.iter()
        .any(|ip| is_loopback(*ip) && policy.allowlisted(*ip))
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => {
            v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

/// The Client ID Metadata Document AGP serves for one connector. The field names are RFC 7591
/// client metadata, as the draft requires.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MetadataDocument {
    /// The URL this document is served at, exactly.
    pub client_id: String,
    pub client_name: String,
    /// AGP's public URL, when it is https (authorization servers refuse other `client_uri`s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_uri: Option<String>,
    /// The one callback every connector shares.
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<&'static str>,
    pub response_types: Vec<&'static str>,
    pub token_endpoint_auth_method: &'static str,
    /// A server-side web application (OIDC `application_type`).
    pub application_type: &'static str,
}

impl MetadataDocument {
    pub fn new(client_id: &str, client_name: &str, redirect_uri: &str, public_url: &str) -> Self {
        MetadataDocument {
            client_id: client_id.to_string(),
            client_name: client_name.to_string(),
            client_uri: public_url
                .starts_with("https://")
                .then(|| public_url.trim_end_matches('/').to_string()),
            redirect_uris: vec![redirect_uri.to_string()],
            grant_types: vec!["authorization_code", "refresh_token"],
            response_types: vec!["code"],
            token_endpoint_auth_method: "none",
            application_type: "web",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(cidrs: &[&str]) -> EgressPolicy {
        EgressPolicy::parse(cidrs).unwrap()
    }

    #[test]
    fn an_https_public_url_gives_the_connector_s_document_url() {
        let url = client_id_url("https://agp.example.com/", "c-1", &allow(&[])).unwrap();
        assert_eq!(
            url.as_str(),
            "https://agp.example.com/.well-known/agp-client/c-1"
        );
        let url = client_id_url("https://agp.example.com/base", "c-1", &allow(&[])).unwrap();
        assert_eq!(
            url.as_str(),
            "https://agp.example.com/base/.well-known/agp-client/c-1"
        );
    }

    #[test]
    fn plain_http_is_refused_outside_development() {
        for public in [
            "http://agp.example.com",
            "http://10.0.0.5:8080",
            // Loopback but not allowlisted: not development.
            "http://127.0.0.1:8080",
            "http://localhost:8080",
        ] {
            let e = client_id_url(public, "c", &allow(&[])).unwrap_err();
            assert!(matches!(e, CimdUrlError::NotHttps { .. }), "{public}: {e}");
            assert!(e.to_string().contains("must use https"), "{e}");
        }
        // Allowlisted but not loopback: still not development.
        let e = client_id_url("http://10.0.0.5:8080", "c", &allow(&["10.0.0.0/8"])).unwrap_err();
        assert!(matches!(e, CimdUrlError::NotHttps { .. }), "{e}");
    }

    #[test]
    fn plain_http_is_accepted_for_an_allowlisted_loopback_public_url() {
        let p = allow(&["127.0.0.1/32"]);
        let url = client_id_url("http://127.0.0.1:8080", "c", &p).unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8080/.well-known/agp-client/c"
        );
        assert!(client_id_url("http://localhost:8080", "c", &p).is_ok());
        assert!(client_id_url("http://[::1]:8080", "c", &allow(&["::1"])).is_ok());
    }

    #[test]
    fn userinfo_dot_segments_and_other_schemes_are_refused() {
        let p = allow(&[]);
        for public in [
            "https://user:pw@agp.example.com",
            "https://agp.example.com/a/..",
            "https://agp.example.com/%2E%2E",
            "ftp://agp.example.com",
        ] {
            assert!(
                matches!(
                    client_id_url(public, "c", &p),
                    Err(CimdUrlError::Invalid { .. })
                ),
                "{public}"
            );
        }
    }

    #[test]
    fn the_document_names_no_secret_and_its_own_url() {
        let d = MetadataDocument::new(
            "https://agp.example.com/.well-known/agp-client/c",
            "AGP notion",
            "https://agp.example.com/connect/callback",
            "https://agp.example.com",
        );
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v["client_id"],
            "https://agp.example.com/.well-known/agp-client/c"
        );
        assert_eq!(v["client_name"], "AGP notion");
        assert_eq!(
            v["redirect_uris"][0],
            "https://agp.example.com/connect/callback"
        );
        assert_eq!(v["token_endpoint_auth_method"], "none");
        assert_eq!(v["client_uri"], "https://agp.example.com");
        assert!(v.get("client_secret").is_none() && v.get("jwks").is_none());
        let dev = MetadataDocument::new(
            "http://127.0.0.1/x",
            "n",
            "http://127.0.0.1/cb",
            "http://127.0.0.1",
        );
        assert!(
            serde_json::to_value(&dev)
                .unwrap()
                .get("client_uri")
                .is_none()
        );
    }
}
