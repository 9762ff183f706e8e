//! Capped body readers: every response AGP reads from a provider goes through here.
//!
//! Invariants: a declared `Content-Length` above the cap is refused before reading; the body
//! is streamed and the read stops as soon as the cap is passed (a 50 MB body costs at most
//! `cap` + one chunk of memory); JSON must be declared as JSON (`application/json` or
//! `…+json`), is nesting-checked by a flat scan before serde sees it (so 10k-deep input is a
//! clean error, never deep recursion), and parse errors never echo values from the body.

use reqwest::Response;
use serde::de::DeserializeOwned;
use url::Url;

use super::client::map_reqwest;
use super::{EgressClient, EgressError, host_of};

/// Cap for metadata documents (PRM, AS metadata): 64 KiB.
pub const METADATA_CAP: usize = 64 * 1024;
/// Cap for token and registration responses: 1 MiB.
pub const TOKEN_RESPONSE_CAP: usize = 1024 * 1024;
/// Deepest JSON nesting accepted. OAuth documents are 2–4 levels deep.
pub const JSON_MAX_DEPTH: usize = 32;

/// Read the whole body, failing once it exceeds `max_bytes`.
pub async fn read_capped(mut resp: Response, max_bytes: usize) -> Result<Vec<u8>, EgressError> {
    let host = host_of(resp.url());
    let too_large = || EgressError::TooLarge {
        host: host.clone(),
        cap: max_bytes,
    };
    let declared = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max_bytes as u64) {
        return Err(too_large());
    }
    let mut body = Vec::with_capacity(declared.map_or(0, |n| n as usize).min(max_bytes));
    while let Some(chunk) = resp.chunk().await.map_err(|e| map_reqwest(&host, e))? {
        if body.len() + chunk.len() > max_bytes {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Whether the response declares a JSON media type (`application/json`, `application/*+json`).
fn json_content_type(resp: &Response) -> Result<(), String> {
    let raw = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(crate::oauth::text::clean(&raw, 80))
    }
}

/// Whether `bytes` nests arrays/objects no deeper than `max` (strings are skipped correctly).
pub fn json_within_depth(bytes: &[u8], max: usize) -> bool {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

/// A description of a serde_json error that never quotes the input.
fn describe_json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let at = format!("line {} column {}", e.line(), e.column());
    match e.classify() {
        Category::Data => {
            let msg = e.to_string();
            if msg.starts_with("missing field") || msg.starts_with("duplicate field") {
                // Field names are ours (backticked), not provider data.
                msg.split(" at line").next().unwrap_or("").to_string()
            } else {
                format!("unexpected value or type at {at}")
            }
        }
        Category::Eof => format!("truncated JSON at {at}"),
        Category::Syntax | Category::Io => format!("malformed JSON at {at}"),
    }
}

/// Parse `bytes` as `T` after the depth check.
pub(crate) fn parse_json<T: DeserializeOwned>(host: &str, bytes: &[u8]) -> Result<T, EgressError> {
    if !json_within_depth(bytes, JSON_MAX_DEPTH) {
        return Err(EgressError::Json {
            host: host.to_string(),
            detail: format!("nested deeper than {JSON_MAX_DEPTH} levels"),
        });
    }
    serde_json::from_slice(bytes).map_err(|e| EgressError::Json {
        host: host.to_string(),
        detail: describe_json_error(&e),
    })
}

/// Require a JSON content type, read at most `cap` bytes, parse with the depth limit.
pub async fn read_json_capped<T: DeserializeOwned>(
    resp: Response,
    cap: usize,
) -> Result<T, EgressError> {
    let host = host_of(resp.url());
    if let Err(content_type) = json_content_type(&resp) {
        return Err(EgressError::ContentType { host, content_type });
    }
    let body = read_capped(resp, cap).await?;
    parse_json(&host, &body)
}

/// GET `url` through the guard, require 2xx and a JSON body of at most `cap` bytes.
pub async fn get_json_capped<T: DeserializeOwned>(
    client: &EgressClient,
    url: &Url,
    cap: usize,
) -> Result<T, EgressError> {
    let resp = client
        .get(url)?
        .header("accept", "application/json")
        .send()
        .await?;
    if !resp.status().is_success() {
        return Err(EgressError::Status {
            host: host_of(url),
            status: resp.status().as_u16(),
        });
    }
    read_json_capped(resp, cap).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_scan() {
        assert!(json_within_depth(br#"{"a":[1,{"b":2}]}"#, 3));
        assert!(!json_within_depth(br#"{"a":[1,{"b":2}]}"#, 2));
        // Brackets inside strings, and escaped quotes, do not count.
        assert!(json_within_depth(br#"{"a":"[[[[\"[[[["}"#, 1));
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(!json_within_depth(deep.as_bytes(), JSON_MAX_DEPTH));
    }

    #[test]
    fn deep_json_is_a_clean_error() {
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        let err = parse_json::<serde_json::Value>("h", deep.as_bytes()).unwrap_err();
        assert!(matches!(err, EgressError::Json { .. }), "{err}");
    }

    #[test]
    fn json_errors_do_not_echo_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u64,
        }
        let err = parse_json::<T>("h", br#"{"n":"s3cr3t-value"}"#).unwrap_err();
        assert!(!err.to_string().contains("s3cr3t"), "{err}");
        let err = parse_json::<T>("h", br#"{}"#).unwrap_err();
        assert!(err.to_string().contains("missing field `n`"), "{err}");
    }
}
