//! Consent flows (S4–S6): server-side records of in-flight authorizations.
//!
//! A flow is created when consent starts (add or reconnect). The admin gets a consent URL that
//! points at AGP (`/connect/start/<flow>`); the first browser to open it is bound to the flow
//! by a random, HttpOnly cookie whose hash the record keeps, and is redirected to the
//! provider. The provider redirects back to `/connect/callback` with `state`: the flow id and an
//! HMAC over it, checked before any lookup. A flow is single-use, expires after [`FLOW_TTL`],
//! and holds the PKCE verifier, which never leaves the server.
//!
//! Two backends behind one [`FlowStore`]: [`memory`] (the embedded mode: one process, a random
//! HMAC key per process, as it always was) and [`postgres`] (several replicas on one database:
//! a consent started on replica A completes on replica B). On PostgreSQL the HMAC key and the
//! key that seals each flow's record are derived from the master key
//! ([`crate::vault::KeyPurpose`]), so every replica has them and no new secret has to be
//! distributed; the PKCE verifier is in the table only sealed.
//!
//! Invariants: a state that does not verify never reaches the table (signing and verifying
//! never touch the backend); a consumed or expired flow is never found again; the verifier is
//! only handed out by [`FlowStore::consume`]; no error, log line or `Debug` carries a secret.

mod memory;
mod postgres;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::store::postgres::PgDatabase;
use crate::vault::{DerivedKey, KeyPurpose, MasterKey, Vault};

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
    /// The stored flow failed its integrity check (altered in the database, or sealed under
    /// another master key): refused, never used.
    #[error("this consent flow's stored record failed its integrity check; start a new one")]
    Corrupt,
    /// The flow table could not be read or written (the database is down). Names the step and
    /// PostgreSQL's error code and message, never a value.
    #[error("the consent flow table is unavailable: {0}")]
    Unavailable(String),
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

/// Where the flows are kept: this process's memory (the embedded mode) or the shared database
/// (several replicas; a consent started on one completes on another).
enum Backend {
    Memory(memory::MemoryFlows),
    Postgres(postgres::PgFlows),
}

/// The consent flow table. Signing and checking `state` never touch the backend; every other
/// step is async because, on PostgreSQL, it is a query.
pub struct FlowStore {
    /// The HMAC key of `state`: random per process in memory, derived from the master key on
    /// PostgreSQL (every replica must verify what another signed).
    state_key: DerivedKey,
    backend: Backend,
}

impl std::fmt::Debug for FlowStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let backend = match self.backend {
            Backend::Memory(_) => "memory",
            Backend::Postgres(_) => "postgres",
        };
        f.debug_struct("FlowStore")
            .field("backend", &backend)
            .finish_non_exhaustive()
    }
}

pub(crate) fn random<const N: usize>() -> Zeroizing<[u8; N]> {
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

/// The keys a shared flow table needs, both derived from the master key so every replica has
/// the same: one signs `state`, the other seals each flow's record (with its PKCE verifier).
#[derive(Debug)]
pub struct FlowKeys {
    pub state: DerivedKey,
    pub seal: DerivedKey,
}

impl FlowKeys {
    /// Both keys from the vault's master key ([`Vault::derive_key`]).
    pub fn from_vault(vault: &Vault) -> Self {
        Self {
            state: vault.derive_key(KeyPurpose::ConsentState),
            seal: vault.derive_key(KeyPurpose::ConsentFlowSeal),
        }
    }

    /// Both keys from a master key (tests; a vault not opened yet).
    pub fn from_master(master: &MasterKey) -> Self {
        Self {
            state: master.derive(KeyPurpose::ConsentState),
            seal: master.derive(KeyPurpose::ConsentFlowSeal),
        }
    }
}

impl FlowStore {
    /// The in-memory table (one process) with a random state key.
    pub fn new(ttl: Duration) -> Self {
        let state_key = DerivedKey::ephemeral(KeyPurpose::ConsentState)
            .unwrap_or_else(|_| panic!("the operating system's random source failed"));
        Self {
            state_key,
            backend: Backend::Memory(memory::MemoryFlows::new(ttl)),
        }
    }

    /// The table in PostgreSQL (`consent_flows`, migration 3) shared by every replica on `db`,
    /// with flows valid for [`FLOW_TTL`].
    pub fn postgres(db: Arc<PgDatabase>, keys: FlowKeys) -> Self {
        Self::postgres_with_ttl(db, keys, FLOW_TTL)
    }

    /// [`FlowStore::postgres`] with another lifetime (tests).
    pub fn postgres_with_ttl(db: Arc<PgDatabase>, keys: FlowKeys, ttl: Duration) -> Self {
        Self {
            state_key: keys.state,
            backend: Backend::Postgres(postgres::PgFlows::new(db, keys.seal, ttl)),
        }
    }

    fn sign(&self, flow_id: &str) -> String {
        B64.encode(
            self.state_key
                .mac(&[b"agp-consent-state-v1\0", flow_id.as_bytes()]),
        )
    }

    /// A fresh flow id and its signed `state`, before the flow exists (the provider URL in the
    /// flow needs the state). [`FlowStore::insert`] registers it.
    pub fn reserve(&self) -> (String, String) {
        let flow_id = B64.encode(random::<16>().as_ref());
        let state = format!("v1.{flow_id}.{}", self.sign(&flow_id));
        (flow_id, state)
    }

    /// Registers the flow under a reserved id; drops expired flows, and the oldest when
    /// [`MAX_FLOWS`] are open.
    pub async fn insert(&self, flow_id: &str, flow: Flow) -> Result<(), FlowError> {
        match &self.backend {
            Backend::Memory(m) => {
                m.insert(flow_id, flow);
                Ok(())
            }
            Backend::Postgres(p) => p.insert(flow_id, flow).await,
        }
    }

    /// Registers a flow; returns its id (for the consent URL) and the signed `state`.
    pub async fn create(&self, flow: Flow) -> Result<(String, String), FlowError> {
        let (flow_id, state) = self.reserve();
        self.insert(&flow_id, flow).await?;
        Ok((flow_id, state))
    }

    /// Checks a `state` value's signature and returns the flow id it names. No lookup happens
    /// for a state that does not verify: this never touches the backend.
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

    /// Binds the flow to the browser opening the consent link: returns the cookie value to set
    /// and the provider URL to redirect to. A second browser is refused.
    pub async fn bind_browser(
        &self,
        flow_id: &str,
        console_session: Option<[u8; 32]>,
    ) -> Result<(String, String), FlowError> {
        match &self.backend {
            Backend::Memory(m) => m.bind_browser(flow_id, console_session),
            Backend::Postgres(p) => p.bind_browser(flow_id, console_session).await,
        }
    }

    /// Restricts flow `flow_id` to the console session whose id hashes to `owner` (set by the
    /// console right after it started the consent, before the link is shown to anyone).
    pub async fn restrict(&self, flow_id: &str, owner: [u8; 32]) -> Result<bool, FlowError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.restrict(flow_id, owner)),
            Backend::Postgres(p) => p.restrict(flow_id, owner).await,
        }
    }

    /// Checks, without consuming, that `flow_id` is live and `cookie` is the browser bound to
    /// it; returns what the `iss` check needs: (expected issuer, whether `iss` is required).
    pub async fn check(
        &self,
        flow_id: &str,
        cookie: Option<&str>,
    ) -> Result<(Option<String>, bool), FlowError> {
        let presented: Option<[u8; 32]> = cookie.map(|c| Sha256::digest(c.as_bytes()).into());
        match &self.backend {
            Backend::Memory(m) => m.check(flow_id, presented),
            Backend::Postgres(p) => p.check(flow_id, presented).await,
        }
    }

    /// Removes the flow and hands it over (single use: of two concurrent calls, on any
    /// replicas, exactly one gets it).
    pub async fn consume(&self, flow_id: &str) -> Result<Flow, FlowError> {
        match &self.backend {
            Backend::Memory(m) => m.consume(flow_id),
            Backend::Postgres(p) => p.consume(flow_id).await,
        }
    }

    /// The name of the connector `flow_id` is for, while the flow is in the table (expired or
    /// not): for the audit record of a refused callback. `None` also when it cannot be read.
    pub async fn connector_of(&self, flow_id: &str) -> Option<String> {
        match &self.backend {
            Backend::Memory(m) => m.connector_of(flow_id),
            Backend::Postgres(p) => p.connector_of(flow_id).await,
        }
    }

    /// Whether `flow_id` names a flow that is still usable (not consumed, cancelled or
    /// expired).
    pub async fn is_live(&self, flow_id: &str) -> Result<bool, FlowError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.is_live(flow_id)),
            Backend::Postgres(p) => p.is_live(flow_id).await,
        }
    }

    /// Drops every flow of `connector_id` (disconnect, remove, a newer reconnect).
    pub async fn cancel_connector(&self, connector_id: &str) -> Result<(), FlowError> {
        match &self.backend {
            Backend::Memory(m) => {
                m.cancel_connector(connector_id);
                Ok(())
            }
            Backend::Postgres(p) => p.cancel_connector(connector_id).await,
        }
    }

    /// How many flows the table holds (expired ones not yet purged included).
    pub async fn len(&self) -> Result<usize, FlowError> {
        match &self.backend {
            Backend::Memory(m) => Ok(m.len()),
            Backend::Postgres(p) => p.len().await,
        }
    }

    pub async fn is_empty(&self) -> Result<bool, FlowError> {
        Ok(self.len().await? == 0)
    }

    /// Database round trips made so far (0 in memory): lets tests show that a forged `state`
    /// is refused before any query.
    pub fn round_trips(&self) -> u64 {
        match &self.backend {
            Backend::Memory(_) => 0,
            Backend::Postgres(p) => p.round_trips(),
        }
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

    #[tokio::test]
    async fn state_verifies_and_forgeries_do_not() {
        let store = FlowStore::default();
        let (id, state) = store.create(flow()).await.unwrap();
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
    fn stores_sharing_a_master_key_verify_each_others_state() {
        // What replicas on one database rely on; the in-memory store's key is its own.
        let master = MasterKey::from_bytes([3; 32]);
        let a = FlowKeys::from_master(&master).state;
        let b = FlowKeys::from_master(&master).state;
        let sign = |k: &DerivedKey| B64.encode(k.mac(&[b"agp-consent-state-v1\0", b"id"]));
        assert_eq!(sign(&a), sign(&b));
        let printed = format!("{:?}", FlowKeys::from_master(&master));
        assert!(printed.contains("[REDACTED]"), "{printed}");
    }

    #[tokio::test]
    async fn a_flow_restricted_to_a_console_session_opens_only_in_it() {
        let store = FlowStore::default();
        let (id, _) = store.create(flow()).await.unwrap();
        assert_eq!(store.restrict(&id, [7; 32]).await, Ok(true));
        assert_eq!(
            store.bind_browser(&id, None).await,
            Err(FlowError::WrongSession)
        );
        assert_eq!(
            store.bind_browser(&id, Some([8; 32])).await,
            Err(FlowError::WrongSession)
        );
        assert!(store.bind_browser(&id, Some([7; 32])).await.is_ok());
        assert_eq!(store.restrict("no-such-flow", [7; 32]).await, Ok(false));
    }

    #[tokio::test]
    async fn bound_browser_single_use_and_expiry() {
        let store = FlowStore::default();
        let (id, _) = store.create(flow()).await.unwrap();
        assert_eq!(
            store.check(&id, Some("nope")).await,
            Err(FlowError::WrongBrowser),
            "unbound"
        );
        let (cookie, url) = store.bind_browser(&id, None).await.unwrap();
        assert!(url.starts_with("https://as.example.com/authorize"));
        assert_eq!(
            store.bind_browser(&id, None).await,
            Err(FlowError::AlreadyBound)
        );
        assert_eq!(
            store.check(&id, Some("other")).await,
            Err(FlowError::WrongBrowser)
        );
        assert_eq!(store.check(&id, None).await, Err(FlowError::WrongBrowser));
        assert!(store.check(&id, Some(&cookie)).await.is_ok());
        assert_eq!(store.is_live(&id).await, Ok(true));
        assert_eq!(store.consume(&id).await.unwrap().generation, 1);
        assert_eq!(store.is_live(&id).await, Ok(false));
        assert_eq!(
            store.consume(&id).await.err(),
            Some(FlowError::Unknown),
            "single use"
        );

        let short = FlowStore::new(Duration::from_millis(1));
        let (id, _) = short.create(flow()).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(short.bind_browser(&id, None).await, Err(FlowError::Expired));
        assert_eq!(short.consume(&id).await.err(), Some(FlowError::Unknown));
    }

    #[tokio::test]
    async fn cancel_drops_a_connectors_flows() {
        let store = FlowStore::default();
        let (id, _) = store.create(flow()).await.unwrap();
        store.cancel_connector("c1").await.unwrap();
        assert_eq!(store.bind_browser(&id, None).await, Err(FlowError::Unknown));
        assert_eq!(store.is_empty().await, Ok(true));
    }
}
