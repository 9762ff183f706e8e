//! What AGP sends to a connector's MCP server on the agent's behalf: an OAuth access token as
//! `Authorization: Bearer`, or a static server's credential — header values and/or a bearer
//! token (`agp servers add`) — or nothing at all for a server that takes none.
//!
//! A static credential is validated once, when the admin gives it ([`StaticCredential::validate`]):
//! header names must be HTTP tokens that the MCP transport does not set itself, values must be
//! valid header values, and every error names the header, never its value (S12). It is sealed
//! in the vault as one document ([`UpstreamCredential::sealed`]); events carry only the header
//! names and a fingerprint.

use std::collections::HashMap;

use axum::http::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

/// Headers the MCP transport (or HTTP itself) sets: a credential cannot use them.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "content-type",
    "content-encoding",
    "accept",
    "accept-encoding",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
    "mcp-session-id",
    "mcp-protocol-version",
    "last-event-id",
];

/// At most this many headers in one credential.
pub const MAX_HEADERS: usize = 16;
/// At most this many bytes in one header value or bearer token.
pub const MAX_VALUE_BYTES: usize = 8192;

/// The credential injected upstream. Holds its secrets wiped on drop; never printed.
#[derive(Clone, Default)]
pub struct UpstreamCredential {
    bearer: Option<SecretString>,
    headers: Vec<(HeaderName, SecretString)>,
}

impl std::fmt::Debug for UpstreamCredential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamCredential")
            .field("bearer", &self.bearer.is_some())
            .field("headers", &self.header_names())
            .finish()
    }
}

/// The sealed form: one JSON document in the vault.
#[derive(serde::Serialize, serde::Deserialize)]
struct Sealed {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    bearer: Option<String>,
    #[serde(default)]
    headers: Vec<(String, String)>,
}

impl Drop for Sealed {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        if let Some(b) = self.bearer.as_mut() {
            b.zeroize();
        }
        for (_, v) in &mut self.headers {
            v.zeroize();
        }
    }
}

/// Why a credential could not be used. Names headers, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CredentialInvalid(pub String);

impl UpstreamCredential {
    /// An OAuth access token, sent as `Authorization: Bearer`.
    pub fn bearer(token: SecretString) -> Self {
        Self {
            bearer: Some(token),
            headers: Vec::new(),
        }
    }

    /// True when nothing is injected (a server that takes no credential).
    pub fn is_empty(&self) -> bool {
        self.bearer.is_none() && self.headers.is_empty()
    }

    pub fn has_bearer(&self) -> bool {
        self.bearer.is_some()
    }

    /// The header names filled, lowercase, in order (`authorization` is not listed for the
    /// bearer token: see [`Self::has_bearer`]).
    pub fn header_names(&self) -> Vec<String> {
        self.headers.iter().map(|(n, _)| n.to_string()).collect()
    }

    /// Every secret value, for scrubbers (S18, S27).
    pub fn secrets(&self) -> impl Iterator<Item = &SecretString> {
        self.bearer
            .iter()
            .chain(self.headers.iter().map(|(_, v)| v))
    }

    /// A scrubber for every secret value (S18, S27).
    pub fn scrubber(&self) -> crate::proxy::scrub::Scrubber {
        crate::proxy::scrub::Scrubber::for_secrets(self.secrets().map(|s| s.expose_secret()))
    }

    /// First 12 hex of SHA-256 over the sealed form; `None` when empty. Changes with any value.
    pub fn fingerprint(&self) -> Option<String> {
        if self.is_empty() {
            return None;
        }
        let sealed = self.sealed().ok()?;
        Some(crate::connectors::service::fingerprint(
            sealed.expose_secret(),
        ))
    }

    /// The document sealed in the vault.
    pub fn sealed(&self) -> Result<SecretString, CredentialInvalid> {
        let doc = Sealed {
            bearer: self.bearer.as_ref().map(|b| b.expose_secret().to_string()),
            headers: self
                .headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.expose_secret().to_string()))
                .collect(),
        };
        let text = Zeroizing::new(
            serde_json::to_string(&doc)
                .map_err(|e| CredentialInvalid(format!("credential not serializable: {e}")))?,
        );
        Ok(SecretString::from(text.as_str()))
    }

    /// Reads the sealed document back (validated again: a tampered one is refused).
    pub fn from_sealed(sealed: &SecretString) -> Result<Self, CredentialInvalid> {
        let doc: Sealed = serde_json::from_str(sealed.expose_secret())
            .map_err(|_| CredentialInvalid("the sealed credential is not readable".into()))?;
        let headers = doc
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), SecretString::from(v.as_str())))
            .collect();
        let bearer = doc.bearer.as_deref().map(SecretString::from);
        StaticCredential { headers, bearer }.validate()
    }

    /// The headers to send, each value marked sensitive (never printed by `http`'s `Debug`);
    /// the formatted bearer text is wiped once copied.
    pub fn header_values(&self) -> Result<Vec<(HeaderName, HeaderValue)>, CredentialInvalid> {
        let mut out = Vec::with_capacity(self.headers.len() + 1);
        if let Some(token) = &self.bearer {
            let text = Zeroizing::new(format!("Bearer {}", token.expose_secret()));
            let mut v = HeaderValue::from_str(&text).map_err(|_| {
                CredentialInvalid("the bearer token is not a valid header value".into())
            })?;
            v.set_sensitive(true);
            out.push((axum::http::header::AUTHORIZATION, v));
        }
        for (name, value) in &self.headers {
            let mut v = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
                CredentialInvalid(format!(
                    "the value of header {name} is not a valid header value"
                ))
            })?;
            v.set_sensitive(true);
            out.push((name.clone(), v));
        }
        Ok(out)
    }

    /// Applies the credential to an rmcp client transport's configuration (discovery, drift
    /// checks): the bearer token as its auth header, the others as custom headers.
    pub fn configure(
        &self,
        config: rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig,
    ) -> Result<
        rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig,
        CredentialInvalid,
    > {
        let mut config = config;
        if let Some(token) = &self.bearer {
            config = config.auth_header(token.expose_secret().to_string());
        }
        if !self.headers.is_empty() {
            let mut custom = HashMap::new();
            for (name, value) in &self.headers {
                custom.insert(name.clone(), sensitive(name, value)?);
            }
            config = config.custom_headers(custom);
        }
        Ok(config)
    }
}

/// `value` as the value of header `name`, marked sensitive.
fn sensitive(name: &HeaderName, value: &SecretString) -> Result<HeaderValue, CredentialInvalid> {
    let mut v = HeaderValue::from_str(value.expose_secret()).map_err(|_| {
        CredentialInvalid(format!(
            "the value of header {name} is not a valid header value"
        ))
    })?;
    v.set_sensitive(true);
    Ok(v)
}

/// A static credential as the admin gives it, before validation.
#[derive(Default)]
pub struct StaticCredential {
    /// `(name, value)` pairs, in the order given.
    pub headers: Vec<(String, SecretString)>,
    pub bearer: Option<SecretString>,
}

impl StaticCredential {
    /// Checks every header and the bearer token; the error names what is wrong, never a value.
    pub fn validate(self) -> Result<UpstreamCredential, CredentialInvalid> {
        if self.headers.len() > MAX_HEADERS {
            return Err(CredentialInvalid(format!(
                "{} headers; at most {MAX_HEADERS} are allowed",
                self.headers.len()
            )));
        }
        let mut headers: Vec<(HeaderName, SecretString)> = Vec::new();
        for (raw, value) in self.headers {
            let name = HeaderName::from_bytes(raw.trim().as_bytes()).map_err(|_| {
                CredentialInvalid(format!(
                    "header name {:?} is not a valid HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)",
                    raw.chars().take(64).collect::<String>()
                ))
            })?;
            if RESERVED.contains(&name.as_str()) {
                return Err(CredentialInvalid(format!(
                    "header {name} is set by the MCP transport itself and cannot carry a credential"
                )));
            }
            if name == axum::http::header::AUTHORIZATION && self.bearer.is_some() {
                return Err(CredentialInvalid(
                    "both a bearer token and an Authorization header: give one of them".into(),
                ));
            }
            if headers.iter().any(|(n, _)| n == name) {
                return Err(CredentialInvalid(format!("header {name} is given twice")));
            }
            check_value(
                value.expose_secret(),
                &format!("the value of header {name}"),
            )?;
            headers.push((name, value));
        }
        if let Some(token) = &self.bearer {
            check_value(token.expose_secret(), "the bearer token")?;
            if token.expose_secret().contains(' ') {
                return Err(CredentialInvalid(
                    "the bearer token contains a space (give the token alone, without \"Bearer \")"
                        .into(),
                ));
            }
        }
        Ok(UpstreamCredential {
            bearer: self.bearer,
            headers,
        })
    }
}

fn check_value(value: &str, what: &str) -> Result<(), CredentialInvalid> {
    if value.trim().is_empty() {
        return Err(CredentialInvalid(format!("{what} is empty")));
    }
    if value.len() > MAX_VALUE_BYTES {
        return Err(CredentialInvalid(format!(
            "{what} is over {MAX_VALUE_BYTES} bytes"
        )));
    }
    if value != value.trim() {
        return Err(CredentialInvalid(format!(
            "{what} starts or ends with white space"
        )));
    }
    // Visible ASCII and spaces/tabs inside: no control characters (a line break would split
    // the request), and nothing a header cannot carry portably.
    if !value
        .bytes()
        .all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
    {
        return Err(CredentialInvalid(format!(
            "{what} is not a valid HTTP header value (control characters such as a line break, and non-ASCII characters, are not allowed)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(headers: &[(&str, &str)], bearer: Option<&str>) -> StaticCredential {
        StaticCredential {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), SecretString::from(*v)))
                .collect(),
            bearer: bearer.map(SecretString::from),
        }
    }

    #[test]
    fn a_valid_credential_round_trips_through_its_sealed_form() {
        let c = cred(&[("X-Api-Key", "k-123456789"), ("X-Team", "acme")], None)
            .validate()
            .unwrap();
        assert_eq!(c.header_names(), vec!["x-api-key", "x-team"]);
        let back = UpstreamCredential::from_sealed(&c.sealed().unwrap()).unwrap();
        assert_eq!(back.header_names(), c.header_names());
        assert_eq!(back.fingerprint(), c.fingerprint());
        let other = cred(&[("X-Api-Key", "k-987654321"), ("X-Team", "acme")], None)
            .validate()
            .unwrap();
        assert_ne!(other.fingerprint(), c.fingerprint());
        assert_eq!(UpstreamCredential::default().fingerprint(), None);
    }

    #[test]
    fn bad_headers_are_refused_naming_the_header_never_the_value() {
        let secret = "s3cr3t-value-0001";
        for (c, expect) in [
            (
                cred(&[("X Api", secret)], None),
                "not a valid HTTP header name",
            ),
            (
                cred(&[("X-Api-Key", "a\r\nInjected: 1")], None),
                "header x-api-key",
            ),
            (cred(&[("X-Api-Key", "k\u{e9}y-value")], None), "non-ASCII"),
            (cred(&[("X-Api-Key", "")], None), "is empty"),
            (cred(&[("Host", secret)], None), "set by the MCP transport"),
            (
                cred(&[("Mcp-Session-Id", secret)], None),
                "set by the MCP transport",
            ),
            (
                cred(&[("Authorization", secret)], Some(secret)),
                "give one of them",
            ),
            (
                cred(&[("X-A", secret), ("x-a", secret)], None),
                "given twice",
            ),
            (cred(&[], Some("Bearer abc")), "without \"Bearer \""),
            (cred(&[], Some("tok\nen")), "not a valid HTTP header value"),
        ] {
            let e = c.validate().unwrap_err().0;
            assert!(e.contains(expect), "{e:?} should say {expect:?}");
            assert!(!e.contains(secret), "{e:?} leaks the value");
            assert!(!e.contains("Injected"), "{e:?} leaks the value");
        }
        let many: Vec<(String, &str)> = (0..=MAX_HEADERS)
            .map(|i| (format!("x-{i}"), secret))
            .collect();
        let many: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        assert!(cred(&many, None).validate().is_err());
    }

    #[test]
    fn headers_are_sensitive_and_the_debug_form_holds_no_value() {
        let c = cred(&[("X-Api-Key", "k-123456789")], Some("tok-abcdefgh"))
            .validate()
            .unwrap();
        let values = c.header_values().unwrap();
        assert_eq!(values[0].0, "authorization");
        assert!(values.iter().all(|(_, v)| v.is_sensitive()));
        let debug = format!("{c:?} {values:?}");
        assert!(
            !debug.contains("k-123456789") && !debug.contains("tok-abcdefgh"),
            "{debug}"
        );
        assert_eq!(c.secrets().count(), 2);
    }
}
