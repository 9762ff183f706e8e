//! Consent flows (S4–S6): server-side records of in-flight authorizations.
//!
//! A flow is created when consent starts (add or reconnect). The admin gets a consent URL that
//! points at AGP (`/connect/start/<flow>`); the first browser to open it is bound to the flow
//! by a random, HttpOnly cookie whose hash the record keeps, and is redirected to the
//! provider. The provider redirects back to `/connect/callback` with `state`: the flow id and an
//! HMAC over it under a per-process key, checked before any lookup. A flow is single-use,
//! expires after [`FLOW_TTL`], and holds the PKCE verifier, which never leaves the server.
//!
//! Invariants: a state that does not verify never reaches the map; a consumed or expired flow
//! is never found again; the verifier is only handed out by [`FlowStore::consume`].

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// How long a consent flow stays valid.
pub const FLOW_TTL: Duration = Duration::from_secs(600);
/// The most flows held at once; older ones are dropped first when it is exceeded.
pub const MAX_FLOWS: usize = 10_000;
/// Prefix of the browser-binding cookie (`agp_consent_<flow>`).
pub const COOKIE_PREFIX: &str = "agp_consent_";

/// Why a flow step was refused. None of these carry secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The state is malformed or its signature does not verify. Refused before any lookup.
    #[error("the state parameter is invalid")]
    BadState,
    /// No such flow: never existed, already used, or dropped.
    #[error("this consent flow is unknown or was already used")]
    Unknown,
    /// Older than [`FLOW_TTL`].
    #[error("this consent flow expired; start a new one with `agp connectors reconnect`")]
    Expired,
    /// The consent link was already opened in another browser.
    #[error("this consent link was already opened in another browser")]
    AlreadyBound,
    /// The callback arrived in a browser other than the one that opened the consent link.
    #[error("this callback did not come from the browser that opened the consent link")]
    WrongBrowser,
    /// The consent was started from a console session and the link was opened outside it.
    #[error("this consent link belongs to the console session that started it; open it from there")]
    WrongSession,
}

/// Everything the callback needs to finish a flow; secrets only as [`SecretString`].
#[derive(Debug)]
pub struct Flow {
    pub connector_id: String,
    pub connector_name: String,
    pub generation: u64,
    pub pkce_verifier: SecretString,
    /// The issuer the authorization server must name in `iss` (RFC 9207).
    pub issuer: Option<String>,
    /// Whether the server advertised `authorization_response_iss_parameter_supported`.
    pub iss_required: bool,
    pub authorize_url: String,
    pub token_endpoint: String,
    /// The OIDC userinfo endpoint from the metadata, for the account (`connectors::account`).
    pub userinfo_endpoint: Option<String>,
    pub redirect_uri: String,
    pub resource: Option<String>,
    pub audience: Option<String>,
    pub scopes: Vec<String>,
}

struct Entry {
    flow: Flow,
    created: Instant,
    /// SHA-256 of the binding cookie, once a browser opened the consent link.
    browser: Option<[u8; 32]>,
    /// For a consent started from the console: the SHA-256 of that console session's id; only
    /// a browser carrying that session may open the link.
    owner: Option<[u8; 32]>,
}

/// The in-memory flow table (single process; a restart invalidates open flows, which is safe:
/// the admin starts a new one).
pub struct FlowStore {
    key: Zeroizing<[u8; 32]>,
    flows: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
}

fn random<const N: usize>() -> Zeroizing<[u8; N]> {
    let mut b = Zeroizing::new([0u8; N]);
    // The OS random source failing is unrecoverable for a security component.
    if getrandom::fill(b.as_mut()).is_err() {
        panic!("the operating system's random source failed");
    }
    b
}

impl Default for FlowStore {
    fn default() -> Self {
        Self::new(FLOW_TTL)
    }
}

impl FlowStore {
    pub fn new(ttl: Duration) -> Self {
        Self {
            key: random::<32>(),
            flows: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    fn sign(&self, flow_id: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(self.key.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(b"agp-consent-state-v1\0");
        mac.update(flow_id.as_bytes());
        B64.encode(mac.finalize().into_bytes())
    }

    /// A fresh flow id and its signed `state`, before the flow exists (the provider URL in the
    /// flow needs the state). [`FlowStore::insert`] registers it.
    pub fn reserve(&self) -> (String, String) {
        let flow_id = B64.encode(random::<16>().as_ref());
        let state = format!("v1.{flow_id}.{}", self.sign(&flow_id));
        (flow_id, state)
    }

    /// Registers the flow under a reserved id.
    pub fn insert(&self, flow_id: &str, flow: Flow) {
        let mut flows = self.flows.lock();
        let now = Instant::now();
        flows.retain(|_, e| now.duration_since(e.created) < self.ttl);
        if flows.len() >= MAX_FLOWS
            && let Some(oldest) = flows
                .iter()
                .min_by_key(|(_, e)| e.created)
                .map(|(k, _)| k.clone())
        {
            flows.remove(&oldest);
        }
        flows.insert(
            flow_id.to_string(),
            Entry {
                flow,
                created: now,
                browser: None,
                owner: None,
            },
        );
    }

    /// Registers a flow; returns its id (for the consent URL) and the signed `state`.
    pub fn create(&self, flow: Flow) -> (String, String) {
        let (flow_id, state) = self.reserve();
        self.insert(&flow_id, flow);
        (flow_id, state)
    }

    /// Checks a `state` value's signature and returns the flow id it names. No lookup happens
    /// for a state that does not verify.
    pub fn verify_state(&self, state: &str) -> Result<String, FlowError> {
        let mut parts = state.split('.');
        let (Some("v1"), Some(flow_id), Some(sig), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(FlowError::BadState);
        };
        if flow_id.len() != 22 || sig.len() != 43 {
            return Err(FlowError::BadState);
        }
        let expected = self.sign(flow_id);
        if bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
            Ok(flow_id.to_string())
        } else {
            Err(FlowError::BadState)
        }
    }

    fn live<'a>(
        &self,
        flows: &'a mut HashMap<String, Entry>,
        flow_id: &str,
    ) -> Result<&'a mut Entry, FlowError> {
        let expired = match flows.get(flow_id) {
            None => return Err(FlowError::Unknown),
            Some(e) => e.created.elapsed() >= self.ttl,
        };
        if expired {
            flows.remove(flow_id);
            return Err(FlowError::Expired);
        }
        flows.get_mut(flow_id).ok_or(FlowError::Unknown)
    }

    /// Binds the flow to the browser opening the consent link: returns the cookie value to set
    /// and the provider URL to redirect to. A second browser is refused.
    pub fn bind_browser(
        &self,
        flow_id: &str,
        console_session: Option<[u8; 32]>,
    ) -> Result<(String, String), FlowError> {
        let mut flows = self.flows.lock();
        let entry = self.live(&mut flows, flow_id)?;
        if let Some(owner) = entry.owner {
            let same = console_session.is_some_and(|s| bool::from(s.ct_eq(&owner)));
            if !same {
                return Err(FlowError::WrongSession);
            }
        }
        if entry.browser.is_some() {
            return Err(FlowError::AlreadyBound);
        }
        let cookie = B64.encode(random::<32>().as_ref());
        entry.browser = Some(Sha256::digest(cookie.as_bytes()).into());
        Ok((cookie, entry.flow.authorize_url.clone()))
    }

    /// Restricts flow `flow_id` to the console session whose id hashes to `owner` (set by the
    /// console right after it started the consent, before the link is shown to anyone).
    pub fn restrict(&self, flow_id: &str, owner: [u8; 32]) -> bool {
        let mut flows = self.flows.lock();
        match flows.get_mut(flow_id) {
            Some(entry) => {
                entry.owner = Some(owner);
                true
            }
            None => false,
        }
    }

    /// Checks, without consuming, that `flow_id` is live and `cookie` is the browser bound to
    /// it; returns what the `iss` check needs: (expected issuer, whether `iss` is required).
    pub fn check(
        &self,
        flow_id: &str,
        cookie: Option<&str>,
    ) -> Result<(Option<String>, bool), FlowError> {
        let mut flows = self.flows.lock();
        let entry = self.live(&mut flows, flow_id)?;
        let presented: Option<[u8; 32]> = cookie.map(|c| Sha256::digest(c.as_bytes()).into());
        match (entry.browser, presented) {
            (Some(bound), Some(p)) if bool::from(bound.ct_eq(&p)) => {
                Ok((entry.flow.issuer.clone(), entry.flow.iss_required))
            }
            _ => Err(FlowError::WrongBrowser),
        }
    }

    /// Removes the flow and hands it over (single use).
    pub fn consume(&self, flow_id: &str) -> Result<Flow, FlowError> {
        let mut flows = self.flows.lock();
        self.live(&mut flows, flow_id)?;
        flows
            .remove(flow_id)
            .map(|e| e.flow)
            .ok_or(FlowError::Unknown)
    }

    /// The name of the connector `flow_id` is for, while the flow is in the table (expired or
    /// not): for the audit record of a refused callback.
    pub fn connector_of(&self, flow_id: &str) -> Option<String> {
        self.flows
            .lock()
            .get(flow_id)
            .map(|e| e.flow.connector_name.clone())
    }

    /// Whether `flow_id` names a flow that is still usable (not consumed, cancelled or expired).
    pub fn is_live(&self, flow_id: &str) -> bool {
        self.flows
            .lock()
            .get(flow_id)
            .is_some_and(|e| e.created.elapsed() < self.ttl)
    }

    /// Drops every flow of `connector_id` (disconnect, remove, a newer reconnect).
    pub fn cancel_connector(&self, connector_id: &str) {
        self.flows
            .lock()
            .retain(|_, e| e.flow.connector_id != connector_id);
    }

    pub fn len(&self) -> usize {
        self.flows.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow() -> Flow {
        Flow {
            connector_id: "c1".into(),
            connector_name: "notion".into(),
            generation: 1,
            pkce_verifier: SecretString::from("verifier"),
            issuer: Some("https://as.example.com".into()),
            iss_required: true,
            authorize_url: "https://as.example.com/authorize?x=1".into(),
            token_endpoint: "https://as.example.com/token".into(),
            userinfo_endpoint: None,
            redirect_uri: "https://agp.example.com/connect/callback".into(),
            resource: None,
            audience: None,
            scopes: vec![],
        }
    }

    #[test]
    fn state_verifies_and_forgeries_do_not() {
        let store = FlowStore::default();
        let (id, state) = store.create(flow());
        assert_eq!(store.verify_state(&state), Ok(id.clone()));
        let other = FlowStore::default();
        assert_eq!(
            other.verify_state(&state),
            Err(FlowError::BadState),
            "another key"
        );
        let tampered = state.replacen(&id, &B64.encode([7u8; 16]), 1);
        assert_eq!(store.verify_state(&tampered), Err(FlowError::BadState));
        for garbage in [
            "",
            "v1",
            "v1..",
            "v2.a.b",
            &"x".repeat(5000),
            "v1.AAAAAAAAAAAAAAAAAAAAAA.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            assert_eq!(
                store.verify_state(garbage),
                Err(FlowError::BadState),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_flow_restricted_to_a_console_session_opens_only_in_it() {
        let store = FlowStore::default();
        let (id, _) = store.create(flow());
        assert!(store.restrict(&id, [7; 32]));
        assert_eq!(store.bind_browser(&id, None), Err(FlowError::WrongSession));
        assert_eq!(
            store.bind_browser(&id, Some([8; 32])),
            Err(FlowError::WrongSession)
        );
        assert!(store.bind_browser(&id, Some([7; 32])).is_ok());
        assert!(!store.restrict("no-such-flow", [7; 32]));
    }

    #[test]
    fn bound_browser_single_use_and_expiry() {
        let store = FlowStore::default();
        let (id, _) = store.create(flow());
        assert_eq!(
            store.check(&id, Some("nope")),
            Err(FlowError::WrongBrowser),
            "unbound"
        );
        let (cookie, url) = store.bind_browser(&id, None).unwrap();
        assert!(url.starts_with("https://as.example.com/authorize"));
        assert_eq!(store.bind_browser(&id, None), Err(FlowError::AlreadyBound));
        assert_eq!(
            store.check(&id, Some("other")),
            Err(FlowError::WrongBrowser)
        );
        assert_eq!(store.check(&id, None), Err(FlowError::WrongBrowser));
        assert!(store.check(&id, Some(&cookie)).is_ok());
        assert!(store.is_live(&id));
        assert_eq!(store.consume(&id).unwrap().generation, 1);
        assert!(!store.is_live(&id));
        assert_eq!(
            store.consume(&id).err(),
            Some(FlowError::Unknown),
            "single use"
        );

        let short = FlowStore::new(Duration::from_millis(1));
        let (id, _) = short.create(flow());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.bind_browser(&id, None), Err(FlowError::Expired));
        assert_eq!(short.consume(&id).err(), Some(FlowError::Unknown));
    }

    #[test]
    fn cancel_drops_a_connectors_flows() {
        let store = FlowStore::default();
        let (id, _) = store.create(flow());
        store.cancel_connector("c1");
        assert_eq!(store.bind_browser(&id, None), Err(FlowError::Unknown));
        assert!(store.is_empty());
    }
}
