//! The probe log and the fetch helpers every discovery step goes through.
//!
//! Owns the step lines (`<label> <METHOD> <url without query> → <status or reason>`) and the
//! split between a *miss* (this location has no usable document: try the next one) and a
//! *failure* (the destination is refused or unreachable: stop).

use serde::de::DeserializeOwned;
use url::Url;

use super::DiscoveryErrorKind;
use super::prm::{BearerChallenge, parse_bearer_challenge};
use crate::oauth::egress::{EgressClient, EgressError, METADATA_CAP, read_json_capped, redacted};

/// Parse an admin-supplied URL override.
pub(super) fn parse_override(
    field: &'static str,
    value: &Option<String>,
) -> Result<Option<Url>, DiscoveryErrorKind> {
    let Some(value) = value else { return Ok(None) };
    absolute_http(value)
        .map(Some)
        .map_err(|reason| DiscoveryErrorKind::InvalidOverride { field, reason })
}

pub(super) fn absolute_http(value: &str) -> Result<Url, String> {
    let url = Url::parse(value).map_err(|e| e.to_string())?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err("not an absolute http(s) URL".into());
    }
    if url.fragment().is_some() {
        return Err("has a fragment".into());
    }
    Ok(url)
}

/// Probe log, and the fetch helper that writes to it.
pub(super) struct Probe<'a> {
    pub client: &'a EgressClient,
    pub steps: Vec<String>,
}

impl Probe<'_> {
    /// GET a metadata document. `Ok(None)` when this location has no usable document (status,
    /// content type, parse, size, redirect — recorded); `Err` when the destination itself is
    /// refused or unreachable.
    pub async fn fetch<T: DeserializeOwned>(
        &mut self,
        label: &str,
        url: &Url,
    ) -> Result<Option<T>, EgressError> {
        let line = format!("{label} GET {}", redacted(url));
        let sent = match self.client.get(url) {
            Ok(req) => req.header("accept", "application/json").send().await,
            Err(e) => Err(e),
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => return self.miss_or_fail(line, e),
        };
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            self.steps.push(format!("{line} → {status}"));
            return Ok(None);
        }
        match read_json_capped(resp, METADATA_CAP).await {
            Ok(doc) => {
                self.steps.push(format!("{line} → {status}"));
                Ok(Some(doc))
            }
            Err(e) => self.miss_or_fail(format!("{line} → {status}"), e),
        }
    }

    pub fn miss_or_fail<T>(
        &mut self,
        line: String,
        e: EgressError,
    ) -> Result<Option<T>, EgressError> {
        self.steps.push(format!("{line} → {e}"));
        if e.is_document_miss() {
            Ok(None)
        } else {
            Err(e)
        }
    }
}

/// The unauthenticated MCP request: an `initialize` POST (what streamable-HTTP servers answer
/// with 401); a 405 gets one GET. Returns the Bearer challenge of a 401, if any.
pub(super) async fn probe_mcp(
    probe: &mut Probe<'_>,
    url: &Url,
) -> Result<Option<BearerChallenge>, EgressError> {
    let body = serde_json::json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": { "name": "agp", "version": env!("CARGO_PKG_VERSION") }
        }
    });
    for method in ["POST", "GET"] {
        let line = format!("mcp {method} {}", redacted(url));
        let req = if method == "POST" {
            probe.client.post(url).map(|r| r.json(&body))
        } else {
            probe.client.get(url)
        };
        let sent = match req {
            Ok(r) => {
                r.header("accept", "application/json, text/event-stream")
                    .send()
                    .await
            }
            Err(e) => Err(e),
        };
        let resp = match sent {
            Ok(resp) => resp,
            Err(e) => {
                probe.miss_or_fail::<()>(line, e)?;
                return Ok(None);
            }
        };
        let status = resp.status().as_u16();
        let challenge = if status == 401 {
            let values = resp.headers().get_all(reqwest::header::WWW_AUTHENTICATE);
            parse_bearer_challenge(values.iter().filter_map(|v| v.to_str().ok()))
        } else {
            None
        };
        let note = match &challenge {
            Some(c) if c.resource_metadata.is_some() => ", WWW-Authenticate resource_metadata",
            Some(_) => ", WWW-Authenticate Bearer without resource_metadata",
            None => "",
        };
        probe.steps.push(format!("{line} → {status}{note}"));
        if status != 405 {
            return Ok(challenge);
        }
    }
    Ok(None)
}
