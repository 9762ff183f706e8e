//! Protected-resource metadata (RFC 9728): the `WWW-Authenticate` challenge, the well-known
//! locations, and the `resource` check.
//!
//! Invariant: a PRM document is used only if its `resource` is the MCP URL, or the same origin
//! with a path that is a prefix of the MCP URL's path on a segment boundary (S2).

use serde::Deserialize;
use url::Url;

use super::DiscoveryErrorKind;
use super::probe::{Probe, absolute_http, probe_mcp};
use crate::oauth::egress::redacted;
use crate::oauth::text::clean;

/// The parts of an RFC 9728 document AGP uses. Unknown fields are ignored.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct ProtectedResourceMetadata {
    #[serde(default)]
    pub resource: Option<String>,
    #[serde(default)]
    pub authorization_servers: Vec<String>,
    #[serde(default)]
    pub scopes_supported: Vec<String>,
}

/// What a `Bearer` challenge said.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BearerChallenge {
    pub resource_metadata: Option<String>,
    pub scope: Option<String>,
}

/// Parse `WWW-Authenticate` header values and return the first `Bearer` challenge's
/// `resource_metadata` and `scope` parameters (RFC 9110 §11.6.1 syntax, quoted strings with
/// backslash escapes; other schemes and token68 forms are skipped).
pub fn parse_bearer_challenge<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Option<BearerChallenge> {
    for value in values {
        for (scheme, params) in parse_challenges(value) {
            if scheme.eq_ignore_ascii_case("bearer") {
                let get = |k: &str| {
                    params
                        .iter()
                        .find(|(name, _)| name.eq_ignore_ascii_case(k))
                        .map(|(_, v)| v.clone())
                };
                return Some(BearerChallenge {
                    resource_metadata: get("resource_metadata"),
                    scope: get("scope"),
                });
            }
        }
    }
    None
}

type Challenge = (String, Vec<(String, String)>);

fn parse_challenges(s: &str) -> Vec<Challenge> {
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut out: Vec<Challenge> = Vec::new();
    let is_tchar = |c: char| !c.is_whitespace() && !matches!(c, ',' | '=' | '"');
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    while i < chars.len() {
        skip_ws(&mut i);
        if i < chars.len() && chars[i] == ',' {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && is_tchar(chars[i]) {
            i += 1;
        }
        if i == start {
            i += 1; // stray character: skip it
            continue;
        }
        let token: String = chars[start..i].iter().collect();
        let mut j = i;
        skip_ws(&mut j);
        let is_param = j < chars.len() && chars[j] == '=' && !out.is_empty();
        if !is_param {
            out.push((token, Vec::new()));
            continue;
        }
        i = j + 1;
        skip_ws(&mut i);
        let value = if i < chars.len() && chars[i] == '"' {
            i += 1;
            let mut v = String::new();
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' && i + 1 < chars.len() {
                    i += 1;
                }
                v.push(chars[i]);
                i += 1;
            }
            i += 1; // closing quote
            v
        } else {
            let vs = i;
            while i < chars.len() && is_tchar(chars[i]) {
                i += 1;
            }
            // `token68` padding (`abc==`): skip the '=' run.
            while i < chars.len() && chars[i] == '=' {
                i += 1;
            }
            chars[vs..i].iter().collect()
        };
        if let Some((_, params)) = out.last_mut() {
            params.push((token, value));
        }
    }
    out
}

/// `https://host/.well-known/<name>/<path>` for a URL with a path, `None` for a root URL.
/// A query is never carried into the well-known URL.
pub(super) fn well_known_inserted(url: &Url, name: &str) -> Option<Url> {
    let path = url.path().trim_end_matches('/');
    if path.is_empty() {
        return None;
    }
    Url::parse(&format!(
        "{}/.well-known/{name}{path}",
        url.origin().ascii_serialization()
    ))
    .ok()
}

/// `https://host/.well-known/<name>`.
pub(super) fn well_known_root(url: &Url, name: &str) -> Option<Url> {
    Url::parse(&format!(
        "{}/.well-known/{name}",
        url.origin().ascii_serialization()
    ))
    .ok()
}

/// Whether a PRM `resource` identifies the MCP server at `mcp`: the same origin, and the same
/// path or a path prefix ending on a segment boundary. A resource with a query must match the
/// MCP URL's path and query exactly; fragments and user-info are never accepted.
pub fn resource_matches(resource: &str, mcp: &Url) -> bool {
    let Ok(r) = Url::parse(resource) else {
        return false;
    };
    if r.fragment().is_some() || !r.username().is_empty() || r.password().is_some() {
        return false;
    }
    if !matches!(r.scheme(), "https" | "http") || r.origin() != mcp.origin() {
        return false;
    }
    if r.query().is_some() {
        return r.path() == mcp.path() && r.query() == mcp.query();
    }
    let rp = r.path().trim_end_matches('/');
    let mp = mcp.path().trim_end_matches('/');
    mp == rp || mp.starts_with(&format!("{rp}/"))
}

/// What the PRM phase established.
pub(super) struct PrmOutcome {
    /// The 401's Bearer challenge, if any.
    pub challenge: Option<BearerChallenge>,
    /// The document that passed the `resource` check, and where it came from.
    pub used: Option<(Url, ProtectedResourceMetadata)>,
}

/// The PRM phase: the MCP probe, then the header's URL, the path-suffixed and the root
/// well-known locations; the first document found is checked. When the admin pinned the
/// authorization server (`as_pinned`), a missing or mismatching PRM is recorded, not fatal.
pub(super) async fn find(
    probe: &mut Probe<'_>,
    mcp: &Url,
    as_pinned: bool,
) -> Result<PrmOutcome, DiscoveryErrorKind> {
    const NAME: &str = "oauth-protected-resource";
    let challenge = probe_mcp(probe, mcp).await?;
    let mut candidates: Vec<(&str, Url)> = Vec::new();
    if let Some(rm) = challenge
        .as_ref()
        .and_then(|c| c.resource_metadata.as_deref())
    {
        match absolute_http(rm) {
            Ok(url) => candidates.push(("prm (WWW-Authenticate)", url)),
            Err(reason) => probe.steps.push(format!(
                "WWW-Authenticate resource_metadata ignored: {reason}"
            )),
        }
    }
    candidates.extend(well_known_inserted(mcp, NAME).map(|u| ("prm", u)));
    candidates.extend(well_known_root(mcp, NAME).map(|u| ("prm", u)));
    let mut found = None;
    for (label, url) in candidates {
        if let Some(doc) = probe
            .fetch::<ProtectedResourceMetadata>(label, &url)
            .await?
        {
            found = Some((url, doc));
            break;
        }
    }
    let used = match found {
        Some((url, doc)) => {
            let resource = doc.resource.clone().unwrap_or_default();
            if resource_matches(&resource, mcp) {
                Some((url, doc))
            } else if as_pinned {
                probe.steps.push(format!(
                    "prm not used: resource {:?} does not match",
                    clean(&resource, 200)
                ));
                None
            } else {
                return Err(DiscoveryErrorKind::ResourceMismatch {
                    found: clean(&resource, 200),
                    expected: redacted(mcp),
                });
            }
        }
        None if as_pinned => {
            probe
                .steps
                .push("prm: none found; authorization server pinned by override".into());
            None
        }
        None => return Err(DiscoveryErrorKind::NoResourceMetadata),
    };
    Ok(PrmOutcome { challenge, used })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let c = parse_bearer_challenge([
            r#"Bearer error="invalid_token", resource_metadata="https://x.example/.well-known/oauth-protected-resource/mcp", scope="read write""#,
        ])
        .unwrap();
        assert_eq!(
            c.resource_metadata.as_deref(),
            Some("https://x.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(c.scope.as_deref(), Some("read write"));

        // Another scheme first, token68, escapes, odd case and spacing.
        let c = parse_bearer_challenge([
            r#"Negotiate YIIG==, Basic realm="a, b", bearer  Resource_Metadata = "https://y/\"q\"" ,realm=x"#,
        ])
        .unwrap();
        assert_eq!(c.resource_metadata.as_deref(), Some(r#"https://y/"q""#));
        assert_eq!(c.scope, None);

        // Several header values; only the Bearer one counts.
        let c = parse_bearer_challenge(["Basic realm=\"r\"", "Bearer scope=files:read"]).unwrap();
        assert_eq!(c.scope.as_deref(), Some("files:read"));
        assert!(parse_bearer_challenge(["Basic realm=\"r\""]).is_none());
        assert!(parse_bearer_challenge([""]).is_none());
    }

    #[test]
    fn well_known_locations() {
        let u = Url::parse("https://h.example/mcp/").unwrap();
        assert_eq!(
            well_known_inserted(&u, "oauth-protected-resource")
                .unwrap()
                .as_str(),
            "https://h.example/.well-known/oauth-protected-resource/mcp"
        );
        let u = Url::parse("https://h.example:8443/a/b?x=1").unwrap();
        assert_eq!(
            well_known_inserted(&u, "n").unwrap().as_str(),
            "https://h.example:8443/.well-known/n/a/b"
        );
        assert_eq!(
            well_known_root(&u, "n").unwrap().as_str(),
            "https://h.example:8443/.well-known/n"
        );
        assert!(well_known_inserted(&Url::parse("https://h/").unwrap(), "n").is_none());
    }

    #[test]
    fn resource_matching() {
        let mcp = Url::parse("https://mcp.example.com/v1/mcp").unwrap();
        for ok in [
            "https://mcp.example.com/v1/mcp",
            "https://mcp.example.com/v1/mcp/",
            "https://MCP.example.com:443/v1",
            "https://mcp.example.com",
            "https://mcp.example.com/",
        ] {
            assert!(resource_matches(ok, &mcp), "{ok}");
        }
        for bad in [
            "https://evil.example/v1/mcp",
            "http://mcp.example.com/v1/mcp",
            "https://mcp.example.com:8443/v1/mcp",
            "https://mcp.example.com/v",
            "https://mcp.example.com/v1/mc",
            "https://mcp.example.com/v1/mcp/extra",
            "https://mcp.example.com/v1/mcp#f",
            "https://u@mcp.example.com/v1/mcp",
            "https://mcp.example.com/v1/mcp?x=1",
            "mcp.example.com/v1/mcp",
            "",
        ] {
            assert!(!resource_matches(bad, &mcp), "{bad}");
        }
    }
}
