//! The OIDC userinfo request (OIDC Core 5.3): one GET with the new access token, through the
//! egress guard, capped and short. Its failure only means no account from here.
//!
//! The endpoint is the one the authorization server's metadata advertised (`userinfo_endpoint`,
//! recorded on the consent flow): the same trust the token endpoint gets, from the same document
//! whose `issuer` was checked. A signed or encrypted userinfo answer (`application/jwt`) is not
//! read: AGP never registers for one.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use url::Url;

use super::Claims;
use crate::oauth::egress::{EgressClient, EgressError, METADATA_CAP, read_json_capped};

/// The largest userinfo answer read.
pub const USERINFO_CAP: usize = METADATA_CAP;
/// The whole request, connect to last byte: the admin's browser waits on the callback.
pub const USERINFO_TIMEOUT: Duration = Duration::from_secs(5);

/// Why userinfo gave no claims. Carries the host at most, never the token or the answer.
#[derive(Debug, thiserror::Error)]
pub enum UserinfoError {
    #[error("the advertised userinfo endpoint is not a URL")]
    BadUrl,
    #[error("userinfo: {0}")]
    Egress(#[from] EgressError),
    #[error("userinfo did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the userinfo answer is not a JSON object")]
    NotObject,
}

/// GETs `endpoint` with `access_token` as a Bearer token; the identity claims of the answer.
pub async fn fetch(
    egress: &EgressClient,
    endpoint: &str,
    access_token: &SecretString,
) -> Result<Claims, UserinfoError> {
    let url = Url::parse(endpoint).map_err(|_| UserinfoError::BadUrl)?;
    let request = async {
        let response = egress
            .get(&url)?
            .header("accept", "application/json")
            .header(
                "authorization",
                &format!("Bearer {}", access_token.expose_secret()),
            )
            .send()
            .await?;
        if !response.status().is_success() {
            return Err(EgressError::Status {
                host: crate::oauth::egress::host_of(&url),
                status: response.status().as_u16(),
            });
        }
        read_json_capped::<Value>(response, USERINFO_CAP).await
    };
    let answer = tokio::time::timeout(USERINFO_TIMEOUT, request)
        .await
        .map_err(|_| UserinfoError::Timeout(USERINFO_TIMEOUT))??;
    match answer {
        Value::Object(obj) => Ok(Claims::from_object(&obj)),
        _ => Err(UserinfoError::NotObject),
    }
}
