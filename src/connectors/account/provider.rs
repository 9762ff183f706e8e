//! Provider-specific account fields of a token response: the last source of the account, for
//! providers that are not OpenID Connect but say who (or which workspace) consented.
//!
//! Only plain strings at the exact paths of [`ACCOUNT_FIELDS`] are read; nothing else of the
//! response is looked at, because some of these objects carry more tokens (Slack's
//! `authed_user` holds a user token). Extending the list: add the provider's path with a note,
//! personal identifiers before workspace names.

use serde_json::{Map, Value};

use super::MAX_RAW_CLAIM;

/// JSON pointers into the token response, tried in order, with the provider that uses each.
pub const ACCOUNT_FIELDS: &[(&str, &str)] = &[
    ("/user/email", "a `user` object (GitHub-style APIs)"),
    ("/user/login", "a `user` object (GitHub-style APIs)"),
    ("/user/name", "a `user` object (GitHub-style APIs)"),
    (
        "/owner/user/person/email",
        "Notion: the person who added the integration",
    ),
    ("/team/name", "Slack (oauth.v2.access): the workspace"),
    ("/workspace_name", "Notion: the workspace"),
];

/// The first non-blank string of [`ACCOUNT_FIELDS`] in `response`, as sent (the caller cleans
/// it); values longer than [`MAX_RAW_CLAIM`] bytes are skipped.
pub fn account_field(response: &Map<String, Value>) -> Option<String> {
    ACCOUNT_FIELDS.iter().find_map(|(pointer, _)| {
        at(response, pointer)
            .and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty() && s.len() <= MAX_RAW_CLAIM)
            .map(str::to_string)
    })
}

/// `pointer` resolved in `obj` (the top level is a map, not a `Value`: no copy of the response).
fn at<'a>(obj: &'a Map<String, Value>, pointer: &str) -> Option<&'a Value> {
    let path = pointer.strip_prefix('/')?;
    match path.split_once('/') {
        None => obj.get(path),
        Some((first, rest)) => obj.get(first)?.pointer(&format!("/{rest}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(v: Value) -> Option<String> {
        account_field(v.as_object().unwrap())
    }

    #[test]
    fn each_documented_field_is_read() {
        assert_eq!(
            field(json!({"user": {"login": "octocat", "id": 1}})).as_deref(),
            Some("octocat")
        );
        assert_eq!(
            field(json!({"team": {"id": "T1", "name": "Acme"}, "authed_user": {"id": "U1", "access_token": "xoxp-canary"}}))
                .as_deref(),
            Some("Acme")
        );
        assert_eq!(
            field(json!({"workspace_name": "Docs", "owner": {"type": "workspace"}})).as_deref(),
            Some("Docs")
        );
        assert_eq!(
            field(json!({"workspace_name": "Docs", "owner": {"user": {"person": {"email": "ada@example.com"}}}}))
                .as_deref(),
            Some("ada@example.com"),
            "the person before the workspace"
        );
        assert_eq!(
            field(json!({"user": {"email": "a@b.c", "login": "ab", "name": "A B"}})).as_deref(),
            Some("a@b.c")
        );
    }

    #[test]
    fn nothing_usable_is_none() {
        for v in [
            json!({}),
            json!({"access_token": "x", "token_type": "Bearer"}),
            json!({"team": "Acme"}),
            json!({"team": {"name": 5}}),
            json!({"user": {"login": "  "}}),
            json!({"workspace_name": "x".repeat(MAX_RAW_CLAIM + 1)}),
            json!({"authed_user": {"id": "U1"}, "email": "top@level.io"}),
        ] {
            assert_eq!(field(v.clone()), None, "{v}");
        }
    }
}
