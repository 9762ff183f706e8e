//! Dynamic client registration (RFC 7591) as a confidential web client.
//!
//! Owns the registration request AGP sends and the validation of the provider's answer.
//! Invariants: the request asks for the caller's token endpoint auth method (chosen from the
//! server's metadata, `domain::connector::client_auth`), `authorization_code` + `refresh_token`, `response_types: ["code"]`, `application_type: "web"`, one redirect URI;
//! a response is accepted only with a non-empty `client_id`, a supported auth method, a secret
//! when that method needs one, and our redirect URI among any it lists. Secrets leave this
//! module only as `SecretString`; errors carry the provider's `error`/`error_description`
//! (cleaned, ≤ 300 characters), never a secret. A provider without a registration endpoint is
//! the caller's concern.

use secrecy::SecretString;
use serde::{Deserialize, Serialize};
use url::Url;
use zeroize::Zeroizing;

use crate::domain::connector::TokenAuthMethod;
use crate::oauth::egress::{
    EgressClient, EgressError, METADATA_CAP, TOKEN_RESPONSE_CAP, read_capped,
};
use crate::oauth::text::clean;

/// What AGP asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRequest {
    /// Shown on the provider's consent screen.
    pub client_name: String,
    /// AGP's single callback, `<public-url>/connect/callback`.
    pub redirect_uri: Url,
    /// Space-separated scopes, when the admin or discovery chose some.
    pub scope: Option<String>,
    /// The `token_endpoint_auth_method` to ask for.
    pub token_endpoint_auth_method: TokenAuthMethod,
}

/// What the provider issued. Secrets go to the vault; the rest into `ClientRegistered`.
#[derive(Debug)]
pub struct ClientRegistration {
    pub client_id: String,
    /// Present for `client_secret_basic` / `client_secret_post`; dropped for `none`.
    pub client_secret: Option<SecretString>,
    /// RFC 7592 management credential.
    pub registration_access_token: Option<SecretString>,
    pub registration_client_uri: Option<Url>,
    /// The method the provider settled on (RFC 7591 default: `client_secret_basic`).
    pub token_endpoint_auth_method: TokenAuthMethod,
    /// Seconds since the epoch; `Some(0)` means it does not expire.
    pub client_secret_expires_at: Option<u64>,
}

/// Why registration failed. Surfaces as a failed `connectors add` (HTTP 502).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegistrationError {
    /// The endpoint was refused or unreachable, or the body broke a cap.
    #[error(transparent)]
    Egress(#[from] EgressError),
    /// The provider answered with an error (RFC 7591 §3.2.2) or an unexpected status.
    #[error("client registration refused (HTTP {status}){}", describe(.error, .description))]
    Rejected {
        status: u16,
        error: Option<String>,
        description: Option<String>,
    },
    /// A success answer AGP cannot use.
    #[error("client registration response is unusable: {reason}")]
    InvalidResponse { reason: String },
}

fn describe(error: &Option<String>, description: &Option<String>) -> String {
    match (error, description) {
        (Some(e), Some(d)) => format!(": {e}: {d}"),
        (Some(e), None) => format!(": {e}"),
        (None, Some(d)) => format!(": {d}"),
        (None, None) => String::new(),
    }
}

#[derive(Serialize)]
struct Body<'a> {
    client_name: &'a str,
    redirect_uris: [&'a str; 1],
    grant_types: [&'a str; 2],
    response_types: [&'a str; 1],
    token_endpoint_auth_method: &'a str,
    application_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<&'a str>,
}

#[derive(Deserialize)]
struct Issued {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_expires_at: Option<u64>,
    #[serde(default)]
    registration_access_token: Option<String>,
    #[serde(default)]
    registration_client_uri: Option<String>,
    #[serde(default)]
    token_endpoint_auth_method: Option<String>,
    #[serde(default)]
    redirect_uris: Option<Vec<String>>,
    #[serde(default)]
    grant_types: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct ProviderError {
    #[serde(default)]
    error: Option<serde_json::Value>,
    #[serde(default)]
    error_description: Option<serde_json::Value>,
}

fn invalid(reason: impl Into<String>) -> RegistrationError {
    RegistrationError::InvalidResponse {
        reason: reason.into(),
    }
}

/// Register AGP at `registration_endpoint` (RFC 7591).
#[tracing::instrument(skip_all, fields(host = registration_endpoint.host_str()))]
pub async fn register(
    client: &EgressClient,
    registration_endpoint: &Url,
    req: &RegistrationRequest,
) -> Result<ClientRegistration, RegistrationError> {
    let body = Body {
        client_name: &req.client_name,
        redirect_uris: [req.redirect_uri.as_str()],
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: req.token_endpoint_auth_method.as_str(),
        application_type: "web",
        scope: req.scope.as_deref(),
    };
    let resp = client
        .post(registration_endpoint)?
        .header("accept", "application/json")
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    if !matches!(status, 200 | 201) {
        return Err(rejected(status, resp).await);
    }
    let issued: Issued = crate::oauth::egress::read_json_capped(resp, TOKEN_RESPONSE_CAP).await?;
    validate(issued, &req.redirect_uri)
}

/// The provider's error, from a JSON body if there is one; any other body is not read further.
async fn rejected(status: u16, resp: reqwest::Response) -> RegistrationError {
    let host = crate::oauth::egress::host_of(resp.url());
    let is_json = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let parsed = if is_json {
        match read_capped(resp, METADATA_CAP).await {
            Ok(bytes) => crate::oauth::egress::parse_json::<ProviderError>(&host, &bytes).ok(),
            Err(_) => None,
        }
    } else {
        None
    };
    let text = |v: Option<serde_json::Value>, max: usize| match v {
        Some(serde_json::Value::String(s)) => Some(clean(&s, max)).filter(|s| !s.is_empty()),
        _ => None,
    };
    let (error, description) = match parsed {
        Some(p) => (text(p.error, 64), text(p.error_description, 300)),
        None => (None, None),
    };
    RegistrationError::Rejected {
        status,
        error,
        description,
    }
}

fn validate(issued: Issued, redirect_uri: &Url) -> Result<ClientRegistration, RegistrationError> {
    // Secrets are moved into `SecretString`s first, so no early return leaves them in a `String`.
    let client_secret = issued
        .client_secret
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(Zeroizing::new(s).as_str()));
    let registration_access_token = issued
        .registration_access_token
        .filter(|s| !s.is_empty())
        .map(|s| SecretString::from(Zeroizing::new(s).as_str()));

    let client_id = issued.client_id.unwrap_or_default();
    if client_id.trim().is_empty() {
        return Err(invalid("no client_id"));
    }
    if client_id.len() > 512 || client_id.chars().any(char::is_control) {
        return Err(invalid("client_id is too long or has control characters"));
    }
    let method = match issued.token_endpoint_auth_method.as_deref() {
        None | Some("client_secret_basic") => TokenAuthMethod::ClientSecretBasic,
        Some("client_secret_post") => TokenAuthMethod::ClientSecretPost,
        Some("none") => TokenAuthMethod::None,
        Some(other) => {
            return Err(invalid(format!(
                "unsupported token_endpoint_auth_method {:?}",
                clean(other, 64)
            )));
        }
    };
    let client_secret = match method {
        TokenAuthMethod::None => None,
        _ if client_secret.is_none() => {
            return Err(invalid(
                "no client_secret for a client_secret_basic/client_secret_post client",
            ));
        }
        _ => client_secret,
    };
    if let Some(uris) = &issued.redirect_uris
        && !uris.iter().any(|u| u == redirect_uri.as_str())
    {
        return Err(invalid("redirect_uris does not contain AGP's callback"));
    }
    if let Some(grants) = &issued.grant_types
        && !grants.iter().any(|g| g == "authorization_code")
    {
        return Err(invalid("grant_types does not include authorization_code"));
    }
    let registration_client_uri = match issued.registration_client_uri {
        None => None,
        Some(s) => match Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "https" | "http") => Some(u),
            _ => return Err(invalid("registration_client_uri is not an absolute URL")),
        },
    };
    Ok(ClientRegistration {
        client_id,
        client_secret,
        registration_access_token,
        registration_client_uri,
        token_endpoint_auth_method: method,
        client_secret_expires_at: issued.client_secret_expires_at,
    })
}
