//! The authorized account of a connector: who (or which workspace) consented, as the provider
//! says, for the connector card, `agp connectors show` and the consent result page.
//!
//! Sources, tried in this order once per consent (never on refresh):
//! 1. the ID token of the token response ([`id_token`]): `email`, else `name`, else
//!    `preferred_username`;
//! 2. the OIDC userinfo endpoint ([`userinfo`]), called with the new access token; when an ID
//!    token was accepted, userinfo must name the same `sub` (OIDC Core 5.3.2);
//! 3. the ID token's `sub`, else userinfo's;
//! 4. a provider-specific field of the token response ([`provider`]);
//! 5. nothing.
//!
//! Why userinfo comes before the ID token's `sub`: in the code flow most OIDC providers put
//! only `sub` in the ID token and keep the profile claims behind userinfo (OIDC Core 5.4), and
//! an opaque `sub` is a poor label when the email is one request away.
//!
//! Invariants:
//! - nothing here fails the consent: a problem yields no account and a warning;
//! - the ID token and the access token are never stored, logged or put in an error;
//! - a candidate that contains one of the connector's tokens is dropped, so a hostile provider
//!   cannot smuggle a token into the event (S12); candidates longer than [`MAX_RAW_CLAIM`]
//!   bytes are dropped too;
//! - what is kept is cleaned ([`crate::oauth::text::clean`]) and at most [`MAX_ACCOUNT_CHARS`]
//!   characters. It is personal data, not a secret: the callback puts it in the
//!   `connector.authorized` event and nowhere else (no log line carries it).

pub mod id_token;
pub mod provider;
pub mod userinfo;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};

use crate::domain::connector::AccountSource;
use crate::oauth::egress::EgressClient;

/// The longest account kept, in characters (an ellipsis marks a cut).
pub const MAX_ACCOUNT_CHARS: usize = 200;
/// A claim or field longer than this (bytes) is ignored rather than cut: no real account name
/// is that long, and a cut value could still hold part of something it should not.
pub const MAX_RAW_CLAIM: usize = 1024;
/// Tokens shorter than this are not searched for in candidates: a short string would match
/// innocent text.
const MIN_SECRET_LEN: usize = 8;

/// The account to record and where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub name: String,
    pub source: AccountSource,
}

/// The identity claims AGP reads, from an ID token or a userinfo response: strings only, each
/// at most [`MAX_RAW_CLAIM`] bytes, as the provider sent them (cleaned when picked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claims {
    pub sub: Option<String>,
    pub email: Option<String>,
    pub name: Option<String>,
    pub preferred_username: Option<String>,
}

impl Claims {
    /// The claims of a JSON object; a claim that is not a short string is ignored.
    pub fn from_object(obj: &Map<String, Value>) -> Self {
        let get = |k: &str| {
            obj.get(k)
                .and_then(Value::as_str)
                .filter(|s| s.len() <= MAX_RAW_CLAIM)
                .map(str::to_string)
        };
        Claims {
            sub: get("sub"),
            email: get("email"),
            name: get("name"),
            preferred_username: get("preferred_username"),
        }
    }

    /// `email`, else `name`, else `preferred_username`: the first usable one.
    fn human(&self, secrets: &[&str]) -> Option<String> {
        [&self.email, &self.name, &self.preferred_username]
            .into_iter()
            .flatten()
            .find_map(|v| keep(v, secrets))
    }

    fn subject(&self, secrets: &[&str]) -> Option<String> {
        self.sub.as_deref().and_then(|v| keep(v, secrets))
    }
}

/// What the callback knows once the code exchange succeeded.
pub struct Sources<'a> {
    /// The connector's issuer (the ID token's `iss` must equal it); `None` when the admin
    /// pinned the endpoints and no issuer is known.
    pub issuer: Option<&'a str>,
    /// AGP's client id at the provider (the ID token's `aud` must contain it).
    pub client_id: &'a str,
    pub id_token: Option<&'a SecretString>,
    /// From the authorization server's metadata, when it advertised one.
    pub userinfo_endpoint: Option<&'a str>,
    pub access_token: &'a SecretString,
    pub refresh_token: Option<&'a SecretString>,
    /// The raw provider-specific field of the token response ([`provider::account_field`]).
    pub token_response: Option<&'a str>,
}

/// `raw` cleaned and capped, unless it is empty, too long, or carries one of `secrets`.
pub fn keep(raw: &str, secrets: &[&str]) -> Option<String> {
    if raw.len() > MAX_RAW_CLAIM {
        return None;
    }
    let carries_secret = secrets.iter().any(|s| {
        s.len() >= MIN_SECRET_LEN
            && (raw.contains(s) || (raw.len() >= MIN_SECRET_LEN && s.contains(raw)))
    });
    if carries_secret {
        tracing::warn!("a provider-supplied account name contains a token and was dropped");
        return None;
    }
    let clean = crate::oauth::text::clean(raw, MAX_ACCOUNT_CHARS);
    (!clean.is_empty()).then_some(clean)
}

/// The account, from the sources in the module's order; `None` when none says. Makes at most
/// one request (userinfo), bounded by [`userinfo::USERINFO_TIMEOUT`].
pub async fn identify(egress: &EgressClient, s: &Sources<'_>) -> Option<Account> {
    let secrets: Vec<&str> = [Some(s.access_token), s.refresh_token, s.id_token]
        .into_iter()
        .flatten()
        .map(|t| t.expose_secret())
        .collect();
    let found = |name: String, source| Some(Account { name, source });

    let id = s.id_token.and_then(|t| {
        id_token::decode(t.expose_secret(), s.issuer, s.client_id)
            .inspect_err(
                |e| tracing::warn!(reason = %e, "the ID token was not used for the account"),
            )
            .ok()
    });
    if let Some(name) = id.as_ref().and_then(|c| c.human(&secrets)) {
        return found(name, AccountSource::IdToken);
    }

    let info = match s.userinfo_endpoint {
        Some(endpoint) => userinfo::fetch(egress, endpoint, s.access_token)
            .await
            .inspect_err(|e| tracing::warn!(reason = %e, "userinfo gave no account"))
            .ok(),
        None => None,
    };
    let id_sub = id.as_ref().and_then(|c| c.sub.as_deref());
    let info = info.filter(|u| match id_sub {
        Some(sub) if u.sub.as_deref() != Some(sub) => {
            tracing::warn!("userinfo names another subject than the ID token: not used");
            false
        }
        _ => true,
    });
    if let Some(name) = info.as_ref().and_then(|c| c.human(&secrets)) {
        return found(name, AccountSource::Userinfo);
    }
    if let Some(name) = id.as_ref().and_then(|c| c.subject(&secrets)) {
        return found(name, AccountSource::IdToken);
    }
    if let Some(name) = info.as_ref().and_then(|c| c.subject(&secrets)) {
        return found(name, AccountSource::Userinfo);
    }
    s.token_response
        .and_then(|raw| keep(raw, &secrets))
        .and_then(|name| found(name, AccountSource::TokenResponse))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const ISS: &str = "https://as.example.com";
    const CLIENT: &str = "agp-client";
    const ACCESS: &str = "at-canary-0123456789";

    fn jwt(payload: Value) -> SecretString {
        let enc = |v: Value| URL_SAFE_NO_PAD.encode(v.to_string());
        SecretString::from(format!(
            "{}.{}.sig",
            enc(json!({"alg": "RS256"})),
            enc(payload)
        ))
    }

    /// `identify` without userinfo (no request is made): the ID token, then the field.
    async fn offline(id_token: Option<SecretString>, field: Option<&str>) -> Option<Account> {
        let egress = EgressClient::new(Default::default(), Default::default()).unwrap();
        let access = SecretString::from(ACCESS);
        let sources = Sources {
            issuer: Some(ISS),
            client_id: CLIENT,
            id_token: id_token.as_ref(),
            userinfo_endpoint: None,
            access_token: &access,
            refresh_token: None,
            token_response: field,
        };
        identify(&egress, &sources).await
    }

    fn account(name: &str, source: AccountSource) -> Option<Account> {
        Some(Account {
            name: name.into(),
            source,
        })
    }

    #[tokio::test]
    async fn the_id_token_comes_first_then_the_provider_field_then_nothing() {
        let claims = |extra: Value| {
            let mut p = json!({"iss": ISS, "aud": CLIENT, "sub": "u-1"});
            for (k, v) in extra.as_object().unwrap() {
                p[k] = v.clone();
            }
            p
        };
        let full = jwt(claims(json!({"email": "ada@example.com", "name": "Ada"})));
        assert_eq!(
            offline(Some(full), Some("Acme")).await,
            account("ada@example.com", AccountSource::IdToken)
        );
        let named = jwt(claims(json!({"name": "Ada", "preferred_username": "ada"})));
        assert_eq!(
            offline(Some(named), None).await,
            account("Ada", AccountSource::IdToken)
        );
        let handle = jwt(claims(json!({"preferred_username": "ada"})));
        assert_eq!(
            offline(Some(handle), None).await,
            account("ada", AccountSource::IdToken)
        );
        let only_sub = jwt(claims(json!({})));
        assert_eq!(
            offline(Some(only_sub), Some("Acme")).await,
            account("u-1", AccountSource::IdToken)
        );
        // An email that is the access token is dropped; the next claim is used.
        let smuggled = jwt(claims(json!({"email": ACCESS, "name": "Ada"})));
        assert_eq!(
            offline(Some(smuggled), None).await,
            account("Ada", AccountSource::IdToken)
        );
        assert_eq!(
            offline(None, Some("Acme\u{0007} Corp")).await,
            account("Acme Corp", AccountSource::TokenResponse),
            "cleaned"
        );
        assert_eq!(offline(None, None).await, None);
    }

    #[tokio::test]
    async fn an_unusable_id_token_is_ignored() {
        let wrong_iss =
            jwt(json!({"iss": "https://evil.example", "aud": CLIENT, "email": "x@y.z"}));
        let wrong_aud = jwt(json!({"iss": ISS, "aud": "someone-else", "email": "x@y.z"}));
        let huge = jwt(json!({"iss": ISS, "aud": CLIENT, "email": "x".repeat(20_000)}));
        let no_claims = jwt(json!({"iss": ISS, "aud": CLIENT}));
        for token in [
            wrong_iss,
            wrong_aud,
            huge,
            no_claims,
            SecretString::from("not-a-jwt"),
            SecretString::from("a.!!!.c"),
        ] {
            assert_eq!(offline(Some(token), None).await, None);
        }
        let wrong_iss =
            jwt(json!({"iss": "https://evil.example", "aud": CLIENT, "email": "x@y.z"}));
        assert_eq!(
            offline(Some(wrong_iss), Some("Acme")).await,
            account("Acme", AccountSource::TokenResponse),
            "falls through to the token response"
        );
    }

    #[test]
    fn kept_names_are_clean_short_and_never_carry_a_token() {
        let token = "at-0123456789abcdef";
        assert_eq!(
            keep("  Ada\u{202E} Lovelace\n", &[token]).as_deref(),
            Some("Ada Lovelace")
        );
        assert_eq!(
            keep(&"é".repeat(300), &[]).map(|s| s.chars().count()),
            Some(201)
        );
        assert_eq!(
            keep(&"x".repeat(MAX_RAW_CLAIM + 1), &[]),
            None,
            "too long: dropped, not cut"
        );
        assert_eq!(keep(" \u{200B} ", &[]), None, "nothing left after cleaning");
        assert_eq!(
            keep(&format!("me+{token}@x.io"), &[token]),
            None,
            "contains the token"
        );
        assert_eq!(keep("0123456789ab", &[token]), None, "a piece of the token");
        assert_eq!(
            keep("ab", &[token]).as_deref(),
            Some("ab"),
            "too short to mean anything"
        );
        assert_eq!(keep("bob", &["short"]).as_deref(), Some("bob"));
    }

    #[test]
    fn claims_take_short_strings_only() {
        let obj = serde_json::json!({"sub": 42, "email": "a@b.c", "name": ["x"],
            "preferred_username": "y".repeat(MAX_RAW_CLAIM + 1)});
        let c = Claims::from_object(obj.as_object().unwrap());
        assert_eq!(
            c,
            Claims {
                email: Some("a@b.c".into()),
                ..Claims::default()
            }
        );
    }
}
