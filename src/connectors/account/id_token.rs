//! Reading the ID token of a token response (OIDC Core 3.1.3.7) for its identity claims.
//!
//! The signature is not verified: the token came straight from the token endpoint over the TLS
//! connection AGP opened, which OIDC Core 3.1.3.7 item 6 accepts in place of the signature
//! check; and AGP authenticates no one with it, it only labels the connector. What is checked:
//! the size, the compact form with a header that does not say `alg: none` (AGP never registers
//! for unsigned ID tokens), `iss` equal to the connector's issuer, `aud` containing AGP's
//! client id, and `azp`, when present, naming AGP. Not checked: `exp` and `iat` (the token is
//! seconds old and is not kept), `nonce` (AGP sends none; PKCE binds the code).
//!
//! Errors never carry the token or a claim value: a hostile provider could put a token there.

use base64::Engine;
use base64::alphabet::URL_SAFE;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use serde_json::{Map, Value};

use super::Claims;
use crate::oauth::egress::{JSON_MAX_DEPTH, json_within_depth};

/// The largest ID token read (bytes of the compact form). Real ones are a few KiB at most.
pub const MAX_ID_TOKEN_LEN: usize = 16 * 1024;

/// base64url with or without padding (JWS says without; some servers pad anyway).
const B64URL: GeneralPurpose = GeneralPurpose::new(
    &URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why an ID token was not used. Logged as a warning; the consent goes on without it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    #[error("the ID token is larger than {MAX_ID_TOKEN_LEN} bytes")]
    TooLarge,
    #[error("the ID token is not a compact JWS (three dot-separated parts)")]
    NotCompact,
    #[error("the ID token's {0} is not base64url")]
    BadBase64(&'static str),
    #[error("the ID token's {0} is not a JSON object")]
    NotJson(&'static str),
    #[error("the ID token is unsigned (alg none)")]
    Unsigned,
    #[error("no issuer is known for this connector to check the ID token's iss against")]
    NoIssuer,
    #[error("the ID token's iss is not the connector's issuer")]
    WrongIssuer,
    #[error("the ID token's aud does not contain AGP's client id")]
    WrongAudience,
    #[error("the ID token's azp is not AGP's client id")]
    WrongAuthorizedParty,
}

fn json_part(part: &str, what: &'static str) -> Result<Map<String, Value>, IdTokenError> {
    let bytes = B64URL
        .decode(part)
        .map_err(|_| IdTokenError::BadBase64(what))?;
    if !json_within_depth(&bytes, JSON_MAX_DEPTH) {
        return Err(IdTokenError::NotJson(what));
    }
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(IdTokenError::NotJson(what)),
    }
}

/// The identity claims of `jwt`, after the checks in the module doc.
pub fn decode(jwt: &str, issuer: Option<&str>, client_id: &str) -> Result<Claims, IdTokenError> {
    if jwt.len() > MAX_ID_TOKEN_LEN {
        return Err(IdTokenError::TooLarge);
    }
    let mut parts = jwt.split('.');
    let (Some(header), Some(payload), Some(_signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(IdTokenError::NotCompact);
    };
    let header = json_part(header, "header")?;
    if header
        .get("alg")
        .and_then(Value::as_str)
        .is_none_or(|alg| alg.eq_ignore_ascii_case("none"))
    {
        return Err(IdTokenError::Unsigned);
    }
    let claims = json_part(payload, "payload")?;
    let issuer = issuer.ok_or(IdTokenError::NoIssuer)?;
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(IdTokenError::WrongIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => aud == client_id,
        Some(Value::Array(auds)) => auds.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !audience_ok {
        return Err(IdTokenError::WrongAudience);
    }
    match claims.get("azp") {
        None => {}
        Some(Value::String(azp)) if azp == client_id => {}
        Some(_) => return Err(IdTokenError::WrongAuthorizedParty),
    }
    Ok(Claims::from_object(&claims))
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use serde_json::json;

    const ISS: &str = "https://as.example.com/tenant";
    const CLIENT: &str = "agp-client";

    fn jwt_with(header: &Value, payload: &Value) -> String {
        let enc = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
        format!("{}.{}.c2lnbmF0dXJl", enc(header), enc(payload))
    }

    fn jwt(payload: Value) -> String {
        jwt_with(&json!({"alg": "RS256", "kid": "k1"}), &payload)
    }

    fn base() -> Value {
        json!({"iss": ISS, "aud": CLIENT, "sub": "u-1", "exp": 1, "iat": 0})
    }

    fn with(extra: Value) -> Value {
        let mut p = base();
        for (k, v) in extra.as_object().unwrap() {
            p[k] = v.clone();
        }
        p
    }

    #[test]
    fn a_good_token_yields_its_identity_claims() {
        let t = jwt(with(json!({"email": "ada@example.com", "name": "Ada",
            "preferred_username": "ada", "aud": ["other", CLIENT], "azp": CLIENT})));
        let c = decode(&t, Some(ISS), CLIENT).unwrap();
        assert_eq!(c.email.as_deref(), Some("ada@example.com"));
        assert_eq!(c.name.as_deref(), Some("Ada"));
        assert_eq!(c.preferred_username.as_deref(), Some("ada"));
        assert_eq!(c.sub.as_deref(), Some("u-1"));
    }

    #[test]
    fn padded_base64url_is_read_too() {
        use base64::engine::general_purpose::URL_SAFE as PADDED;
        // Three subjects of different lengths cover every padding length.
        for sub in ["u-1", "u-12", "u-123"] {
            let enc = |v: Value| PADDED.encode(v.to_string());
            let t = format!(
                "{}.{}.sig",
                enc(json!({"alg": "ES256"})),
                enc(with(json!({ "sub": sub })))
            );
            assert_eq!(
                decode(&t, Some(ISS), CLIENT).unwrap().sub.as_deref(),
                Some(sub)
            );
        }
    }

    #[test]
    fn missing_claims_are_none() {
        let c = decode(&jwt(base()), Some(ISS), CLIENT).unwrap();
        assert_eq!((c.email, c.name, c.preferred_username), (None, None, None));
        let mut no_sub = base();
        no_sub.as_object_mut().unwrap().remove("sub");
        assert_eq!(
            decode(&jwt(no_sub), Some(ISS), CLIENT).unwrap(),
            Claims::default()
        );
        // Claims of the wrong type are absent, not errors.
        let odd = jwt(with(
            json!({"email": 7, "name": {"first": "Ada"}, "sub": null}),
        ));
        assert_eq!(decode(&odd, Some(ISS), CLIENT).unwrap(), Claims::default());
    }

    #[test]
    fn malformed_tokens_are_refused() {
        let good = jwt(base());
        let (h, rest) = good.split_once('.').unwrap();
        let (p, _) = rest.split_once('.').unwrap();
        for (token, want) in [
            ("".to_string(), IdTokenError::NotCompact),
            ("a.b".to_string(), IdTokenError::NotCompact),
            (format!("{good}.x.y"), IdTokenError::NotCompact),
            (format!("{h}.{p}!!.sig"), IdTokenError::BadBase64("payload")),
            (format!("%%.{p}.sig"), IdTokenError::BadBase64("header")),
            (
                format!("{h}.{}.sig", URL_SAFE_NO_PAD.encode("not json")),
                IdTokenError::NotJson("payload"),
            ),
            (
                format!("{h}.{}.sig", URL_SAFE_NO_PAD.encode("[1,2]")),
                IdTokenError::NotJson("payload"),
            ),
            (
                format!(
                    "{h}.{}.sig",
                    URL_SAFE_NO_PAD.encode("[".repeat(100) + &"]".repeat(100))
                ),
                IdTokenError::NotJson("payload"),
            ),
            (
                jwt_with(&json!({"alg": "none"}), &base()),
                IdTokenError::Unsigned,
            ),
            (
                jwt_with(&json!({"typ": "JWT"}), &base()),
                IdTokenError::Unsigned,
            ),
        ] {
            assert_eq!(decode(&token, Some(ISS), CLIENT), Err(want), "{token}");
        }
    }

    #[test]
    fn a_huge_token_is_refused_before_decoding() {
        let huge = jwt(with(json!({"email": "x".repeat(MAX_ID_TOKEN_LEN)})));
        assert_eq!(
            decode(&huge, Some(ISS), CLIENT),
            Err(IdTokenError::TooLarge)
        );
    }

    #[test]
    fn issuer_audience_and_party_must_be_the_connectors() {
        let t = jwt(base());
        assert_eq!(decode(&t, None, CLIENT), Err(IdTokenError::NoIssuer));
        assert_eq!(
            decode(&t, Some("https://evil.example"), CLIENT),
            Err(IdTokenError::WrongIssuer)
        );
        assert_eq!(
            decode(&t, Some(&format!("{ISS}/")), CLIENT),
            Err(IdTokenError::WrongIssuer),
            "exact string comparison"
        );
        assert_eq!(
            decode(&t, Some(ISS), "another-client"),
            Err(IdTokenError::WrongAudience)
        );
        for aud in [json!(["a", "b"]), json!([]), json!(null), json!(5)] {
            let t = jwt(with(json!({ "aud": aud })));
            assert_eq!(
                decode(&t, Some(ISS), CLIENT),
                Err(IdTokenError::WrongAudience),
                "{aud}"
            );
        }
        let no_aud = {
            let mut p = base();
            p.as_object_mut().unwrap().remove("aud");
            jwt(p)
        };
        assert_eq!(
            decode(&no_aud, Some(ISS), CLIENT),
            Err(IdTokenError::WrongAudience)
        );
        let t = jwt(with(
            json!({"azp": "another-client", "aud": [CLIENT, "another-client"]}),
        ));
        assert_eq!(
            decode(&t, Some(ISS), CLIENT),
            Err(IdTokenError::WrongAuthorizedParty)
        );
    }

    #[test]
    fn errors_never_echo_the_token_or_its_claims() {
        let t = jwt(with(
            json!({"iss": "canary-iss-value", "email": "canary@x"}),
        ));
        let e = decode(&t, Some(ISS), CLIENT).unwrap_err().to_string();
        assert!(!e.contains("canary") && !e.contains(&t[..20]), "{e}");
    }
}
