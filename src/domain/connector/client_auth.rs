//! Which client authentication AGP uses at an authorization server, chosen from the server's
//! own metadata (RFC 8414 `token_endpoint_auth_methods_supported` and
//! `revocation_endpoint_auth_methods_supported`).
//!
//! The rules (issue 11; the MCP SDKs' own authorization servers list only `client_secret_post`
//! and `none`, or both secret methods):
//! - a client that holds a secret uses `client_secret_basic` when the server lists it, or lists
//!   nothing (RFC 8414's default), else `client_secret_post`;
//! - a server that lists neither but lists `none` gets a public client (PKCE still protects the
//!   code); a client without a secret is always `none`;
//! - never a method the server's non-empty list leaves out: a server listing only methods AGP
//!   cannot use (e.g. `private_key_jwt`) is refused with that list named;
//! - revocation follows its own list the same way; when that list leaves out both secret
//!   methods, the token endpoint's method is used, as RFC 7009 §2.1 ties revocation to "the
//!   client credentials" the token endpoint accepts.
//!
//! Pure: each choice carries the sentence `agp connectors show` prints as its reason.

use super::TokenAuthMethod;

/// A chosen method and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthChoice {
    pub method: TokenAuthMethod,
    pub reason: String,
}

/// The server lists only methods AGP cannot use. Surfaces as a failed `connectors add` (400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the authorization server's token_endpoint_auth_methods_supported lists {}; AGP can \
     authenticate with client_secret_basic, client_secret_post or none",
    listed(.advertised)
)]
pub struct NoUsableMethod {
    pub advertised: Vec<String>,
}

impl TokenAuthMethod {
    /// The RFC 7591 / RFC 8414 spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenAuthMethod::ClientSecretBasic => "client_secret_basic",
            TokenAuthMethod::ClientSecretPost => "client_secret_post",
            TokenAuthMethod::None => "none",
        }
    }
}

fn listed(methods: &[String]) -> String {
    let shown: Vec<&str> = methods.iter().take(8).map(String::as_str).collect();
    format!("[{}]", shown.join(", "))
}

/// `None` when the server lists nothing (absent or empty: RFC 8414's default applies).
fn advertised(supported: Option<&[String]>) -> Option<&[String]> {
    supported.filter(|l| !l.is_empty())
}

fn lists(list: &[String], m: TokenAuthMethod) -> bool {
    list.iter().any(|s| s == m.as_str())
}

fn choose(
    supported: Option<&[String]>,
    has_secret: bool,
    what: &str,
) -> Result<AuthChoice, NoUsableMethod> {
    use TokenAuthMethod::{ClientSecretBasic as Basic, ClientSecretPost as Post};
    let Some(list) = advertised(supported) else {
        return Ok(if has_secret {
            AuthChoice {
                method: Basic,
                reason: format!(
                    "the server lists no {what}; client_secret_basic is RFC 8414's default"
                ),
            }
        } else {
            AuthChoice {
                method: TokenAuthMethod::None,
                reason: "the client has no secret: a public client".into(),
            }
        });
    };
    let shown = listed(list);
    if has_secret {
        for m in [Basic, Post] {
            if lists(list, m) {
                let preferred = if m == Basic {
                    "AGP prefers client_secret_basic"
                } else {
                    "client_secret_basic is not among them"
                };
                return Ok(AuthChoice {
                    method: m,
                    reason: format!("the server's {what} is {shown}; {preferred}"),
                });
            }
        }
    }
    if lists(list, TokenAuthMethod::None) {
        let reason = if has_secret {
            format!("the server's {what} is {shown}: a public client, PKCE protects the code")
        } else {
            format!("the client has no secret and the server's {what} is {shown}")
        };
        return Ok(AuthChoice {
            method: TokenAuthMethod::None,
            reason,
        });
    }
    Err(NoUsableMethod {
        advertised: list.to_vec(),
    })
}

/// The method a Client ID Metadata Document declares. The document may name no shared secret
/// (draft-ietf-oauth-client-id-metadata-document §4.1) and AGP publishes no key, so it is a
/// public client: `none`, unless the server's non-empty list leaves `none` out.
pub fn for_metadata_document(supported: Option<&[String]>) -> Result<AuthChoice, NoUsableMethod> {
    const WHY: &str = "a client ID metadata document can name no shared secret (AGP publishes no \
                       key): a public client, PKCE protects the code";
    match advertised(supported) {
        None => Ok(AuthChoice {
            method: TokenAuthMethod::None,
            reason: format!("{WHY}; the server lists no token_endpoint_auth_methods_supported"),
        }),
        Some(list) if lists(list, TokenAuthMethod::None) => Ok(AuthChoice {
            method: TokenAuthMethod::None,
            reason: format!(
                "{WHY}; the server's token_endpoint_auth_methods_supported is {}",
                listed(list)
            ),
        }),
        Some(list) => Err(NoUsableMethod {
            advertised: list.to_vec(),
        }),
    }
}

/// The method to ask for in a Dynamic Client Registration.
pub fn for_registration(supported: Option<&[String]>) -> Result<AuthChoice, NoUsableMethod> {
    choose(supported, true, "token_endpoint_auth_methods_supported")
}

/// The method of an admin-registered client: the admin's when given, else chosen from the
/// server's list as for DCR (`has_secret` false: `none`).
pub fn for_registered_client(
    chosen_by_admin: Option<TokenAuthMethod>,
    supported: Option<&[String]>,
    has_secret: bool,
) -> Result<AuthChoice, NoUsableMethod> {
    match chosen_by_admin {
        Some(method) => {
            let note = match advertised(supported) {
                Some(list) if !lists(list, method) => format!(
                    " (the server's token_endpoint_auth_methods_supported, {}, does not list it)",
                    listed(list)
                ),
                _ => String::new(),
            };
            Ok(AuthChoice {
                method,
                reason: format!("set by the admin (--token-auth-method){note}"),
            })
        }
        None => choose(
            supported,
            has_secret,
            "token_endpoint_auth_methods_supported",
        ),
    }
}

/// The method for the revocation endpoint of a client that authenticates with `client` at the
/// token endpoint.
pub fn for_revocation(supported: Option<&[String]>, client: TokenAuthMethod) -> AuthChoice {
    if client == TokenAuthMethod::None {
        return AuthChoice {
            method: TokenAuthMethod::None,
            reason: "a public client: client_id only".into(),
        };
    }
    match choose(
        supported,
        true,
        "revocation_endpoint_auth_methods_supported",
    ) {
        Ok(choice) if choice.method != TokenAuthMethod::None => choice,
        _ => AuthChoice {
            method: client,
            reason: format!(
                "the server's revocation_endpoint_auth_methods_supported, {}, lists no secret \
                 method; using the token endpoint's",
                listed(supported.unwrap_or_default())
            ),
        },
    }
}

/// Whether to retry a revocation refused with HTTP 400 or 401 once more with the secret in
/// both places (Basic header and `client_secret` in the body): only for a secret-holding client
/// whose server lists both secret methods for revocation. A server can list a method its
/// endpoint then refuses: the Python MCP SDK's (`mcp` 2.3.0) revocation endpoint lists
/// `client_secret_basic` but validates `client_secret` as a required form field, while its
/// authenticator demands the Basic header for a `client_secret_basic` client, so no request
/// with one method alone revokes there (python-sdk issue #3508). RFC 6749 §2.3.1 asks for one
/// method per request, hence a retry only, to the endpoint that refused the compliant request.
pub fn revocation_retry_with_both(supported: Option<&[String]>, primary: TokenAuthMethod) -> bool {
    use TokenAuthMethod::{ClientSecretBasic as Basic, ClientSecretPost as Post};
    primary != TokenAuthMethod::None
        && advertised(supported).is_some_and(|l| lists(l, Basic) && lists(l, Post))
}

/// A v1 event recorded no reason; what AGP did then, stated as such (used by the upcasts).
pub const REASON_BEFORE_V2_DCR: &str =
    "recorded before AGP chose from the server's metadata: every DCR asked for client_secret_basic";
/// See [`REASON_BEFORE_V2_DCR`].
pub const REASON_BEFORE_V2_CLIENT: &str = "recorded before AGP chose from the server's metadata: \
     the admin's --token-auth-method, else client_secret_basic with a secret and none without";

#[cfg(test)]
mod tests {
    use super::*;
    use TokenAuthMethod::{ClientSecretBasic as Basic, ClientSecretPost as Post};

    fn list(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    fn dcr(s: Option<&[&str]>) -> Result<TokenAuthMethod, NoUsableMethod> {
        let l = s.map(list);
        for_registration(l.as_deref()).map(|c| c.method)
    }

    #[test]
    fn registration_prefers_basic_then_post_then_none_and_defaults_to_basic() {
        assert_eq!(dcr(None), Ok(Basic), "absent: RFC 8414 default");
        assert_eq!(dcr(Some(&[])), Ok(Basic), "empty: treated as absent");
        assert_eq!(
            dcr(Some(&["client_secret_post", "client_secret_basic"])),
            Ok(Basic),
            "the Python SDK's list"
        );
        assert_eq!(
            dcr(Some(&["client_secret_post", "none"])),
            Ok(Post),
            "the TypeScript SDK's list"
        );
        assert_eq!(dcr(Some(&["none"])), Ok(TokenAuthMethod::None));
        let err = dcr(Some(&["private_key_jwt", "tls_client_auth"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the authorization server's token_endpoint_auth_methods_supported lists \
             [private_key_jwt, tls_client_auth]; AGP can authenticate with client_secret_basic, \
             client_secret_post or none"
        );
    }

    #[test]
    fn every_choice_names_its_reason() {
        let l = list(&["client_secret_post", "none"]);
        let c = for_registration(Some(&l)).unwrap();
        assert_eq!(
            c.reason,
            "the server's token_endpoint_auth_methods_supported is [client_secret_post, none]; \
             client_secret_basic is not among them"
        );
        let c = for_registration(None).unwrap();
        assert!(c.reason.contains("RFC 8414's default"), "{}", c.reason);
    }

    #[test]
    fn a_registered_client_keeps_the_admins_method_and_notes_an_unlisted_one() {
        let l = list(&["client_secret_post", "none"]);
        let c = for_registered_client(Some(Post), Some(&l), true).unwrap();
        assert_eq!(c.method, Post);
        assert_eq!(c.reason, "set by the admin (--token-auth-method)");
        let c = for_registered_client(Some(Basic), Some(&l), true).unwrap();
        assert_eq!(c.method, Basic);
        assert!(c.reason.contains("does not list it"), "{}", c.reason);
        // No method given: chosen from the list; no secret: none.
        let c = for_registered_client(None, Some(&l), true).unwrap();
        assert_eq!(c.method, Post);
        let c = for_registered_client(None, None, false).unwrap();
        assert_eq!(c.method, TokenAuthMethod::None);
        let only_secret = list(&["client_secret_basic"]);
        assert!(for_registered_client(None, Some(&only_secret), false).is_err());
    }

    #[test]
    fn revocation_follows_its_own_list_then_the_token_method() {
        let ts = list(&["client_secret_post"]);
        assert_eq!(for_revocation(Some(&ts), Basic).method, Post);
        let py = list(&["client_secret_post", "client_secret_basic"]);
        assert_eq!(for_revocation(Some(&py), Post).method, Basic);
        assert_eq!(for_revocation(None, Post).method, Basic, "RFC 8414 default");
        let odd = list(&["private_key_jwt"]);
        let c = for_revocation(Some(&odd), Post);
        assert_eq!(c.method, Post);
        assert!(c.reason.contains("token endpoint's"), "{}", c.reason);
        assert_eq!(
            for_revocation(Some(&ts), TokenAuthMethod::None).method,
            TokenAuthMethod::None
        );
    }

    #[test]
    fn the_revocation_retry_needs_both_secret_methods_listed() {
        let py = list(&["client_secret_post", "client_secret_basic"]);
        assert!(revocation_retry_with_both(Some(&py), Basic));
        assert!(revocation_retry_with_both(Some(&py), Post));
        let ts = list(&["client_secret_post"]);
        assert!(!revocation_retry_with_both(Some(&ts), Post));
        assert!(!revocation_retry_with_both(None, Basic), "nothing listed");
        assert!(!revocation_retry_with_both(
            Some(&py),
            TokenAuthMethod::None
        ));
    }

    #[test]
    fn a_metadata_document_is_a_public_client_where_the_server_allows_one() {
        let cimd = |s: Option<&[&str]>| {
            let l = s.map(list);
            for_metadata_document(l.as_deref())
        };
        let c = cimd(None).unwrap();
        assert_eq!(c.method, TokenAuthMethod::None);
        assert!(c.reason.contains("lists no"), "{}", c.reason);
        let c = cimd(Some(&["client_secret_basic", "none", "private_key_jwt"])).unwrap();
        assert_eq!(c.method, TokenAuthMethod::None);
        assert!(
            c.reason
                .contains("[client_secret_basic, none, private_key_jwt]")
        );
        let e = cimd(Some(&["client_secret_basic", "private_key_jwt"])).unwrap_err();
        assert_eq!(
            e.advertised,
            list(&["client_secret_basic", "private_key_jwt"])
        );
    }
}
