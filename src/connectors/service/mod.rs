//! The connector service: add (discovery → registration → consent URL), consent callback,
//! disconnect (stop → revoke → shred), reconnect and remove; tool discovery and registration
//! ([`tools`]); rug-pull detection and approval ([`drift`]).
//!
//! Order of effects, and why:
//! - `add` runs discovery and registration *before* appending anything, so a provider that
//!   cannot be used leaves no half-made connector behind (and fails with a clear message).
//! - Secrets go to the vault before the event that says they exist.
//! - `disconnect` appends its event first: that is the linearization point after which nothing
//!   is served. Revocation follows, then the data keys are destroyed once it settled (S10, S13).
//!
//! Every error message names what was wrong and never carries a secret (S12).

pub mod add;
mod callback;
pub mod credential;
mod diffs;
pub mod drift;
pub mod servers;
mod teardown;
pub mod tools;

use std::sync::Arc;

use secrecy::SecretString;

use crate::domain::connector::{Connector, ConnectorError};
use crate::oauth::egress::EgressClient;
use crate::projections::LiveProjections;
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::{CommandBus, CommandMeta, Committed};
use crate::vault::Vault;

use super::flows::FlowStore;
use super::results::ResultStore;

pub use add::{AddConnector, Consent};
pub use callback::CallbackParams;
pub use servers::AddServer;
pub use teardown::{RetryBackoff, RevocationReport, Teardown};

/// How long a command waits for the projections to fold its events.
const SETTLE: std::time::Duration = std::time::Duration::from_secs(10);

/// Failures of connector operations, each with the HTTP status it surfaces as.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// 400: the request is wrong (bad URL, bad override, missing client id…).
    #[error("{0}")]
    Invalid(String),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409: illegal in the connector's current state, or a name taken.
    #[error("{0}")]
    Conflict(String),
    /// 502: the provider answered wrongly or could not be reached.
    #[error("{0}")]
    Provider(String),
    /// 503: the log or projections are unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// 500.
    #[error("{0}")]
    Internal(String),
}

impl From<crate::vault::VaultError> for ServiceError {
    fn from(e: crate::vault::VaultError) -> Self {
        ServiceError::Internal(format!("vault: {e}"))
    }
}

impl From<crate::cluster::ClusterError> for ServiceError {
    fn from(e: crate::cluster::ClusterError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

/// The log failed while claiming a name.
impl From<crate::store::StoreError> for ServiceError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::Unavailable(format!("event log: {e}"))
    }
}

impl From<crate::projections::live::WaitError> for ServiceError {
    fn from(e: crate::projections::live::WaitError) -> Self {
        ServiceError::Unavailable(e.to_string())
    }
}

/// Everything connector operations need.
pub struct ConnectorService {
    pub(crate) projections: Arc<LiveProjections>,
    pub(crate) bus: CommandBus<Connector>,
    pub(crate) vault: Arc<Vault>,
    pub(crate) egress: EgressClient,
    pub flows: FlowStore,
    pub results: ResultStore,
    /// `<public_url>/connect/callback`, the one redirect URI of every connector.
    pub(crate) redirect_uri: String,
    pub(crate) public_url: String,
    /// Serializes adds so connector names are unique.
    naming: tokio::sync::Mutex<()>,
    /// Serializes tool registrations so catalog names and aliases stay unique across
    /// connectors (the aggregate sees only its own connector).
    registering: tokio::sync::Mutex<()>,
    /// Accept authorization servers that do not advertise PKCE support (audited per connector).
    pub(crate) allow_missing_pkce_metadata: bool,
    /// Single-flight of token refreshes, per connector.
    refresh_locks: credential::ConnectorLocks,
    /// Custody, per connector: held while fresh tokens are sealed and recorded, and while a
    /// disconnect or a reconnect appends its event, so tokens are never sealed into a slot
    /// whose connector already moved on (S10).
    pub(crate) custody: credential::ConnectorLocks,
    /// Per connector: drift checks and approvals run one at a time, so a periodic check and an
    /// admin's approval never interleave their listings and commands.
    drift_locks: credential::ConnectorLocks,
    /// The replicas' coordination (one process: in-process locks, always the leader).
    pub(crate) cluster: Arc<crate::cluster::Cluster>,
    /// Flipped at shutdown: background work (retries, the refresher) ends and lets go of the
    /// vault, so the data directory can be reopened.
    stopping: tokio::sync::watch::Sender<bool>,
    /// Token requests made by refreshes (tests assert single-flight with it).
    refresh_requests: std::sync::atomic::AtomicU64,
    /// The log, for facts no aggregate decides (refused consent callbacks).
    pub(crate) log: Arc<dyn crate::store::EventLog>,
    /// When failed revocations are tried again.
    pub(crate) revocation_backoff: RetryBackoff,
    /// Which refused callbacks are recorded (S5, rate-limited).
    pub(crate) refusals: super::refusals::RefusalLimiter,
}

impl ConnectorService {
    pub fn new(
        log: Arc<dyn crate::store::EventLog>,
        projections: Arc<LiveProjections>,
        vault: Arc<Vault>,
        egress: EgressClient,
        public_url: &str,
    ) -> Self {
        let public_url = public_url.trim_end_matches('/').to_string();
        let cluster = crate::cluster::Cluster::single(log.clone());
        Self {
            projections,
            bus: CommandBus::new(log.clone(), ()),
            log,
            refusals: super::refusals::RefusalLimiter::default(),
            revocation_backoff: RetryBackoff::default(),
            vault,
            egress,
            flows: FlowStore::default(),
            results: ResultStore::default(),
            redirect_uri: format!("{public_url}/connect/callback"),
            public_url,
            naming: tokio::sync::Mutex::new(()),
            registering: tokio::sync::Mutex::new(()),
            allow_missing_pkce_metadata: false,
            refresh_locks: credential::ConnectorLocks::new("refresh", cluster.clone()),
            custody: credential::ConnectorLocks::new("custody", cluster.clone()),
            drift_locks: credential::ConnectorLocks::new("drift", cluster.clone()),
            cluster,
            refresh_requests: std::sync::atomic::AtomicU64::new(0),
            stopping: tokio::sync::watch::channel(false).0,
        }
    }

    /// Coordinates with the other replicas through `cluster` (before the service is shared):
    /// its per-connector locks, and leadership for the background jobs.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Self {
        self.refresh_locks = credential::ConnectorLocks::new("refresh", cluster.clone());
        self.custody = credential::ConnectorLocks::new("custody", cluster.clone());
        self.drift_locks = credential::ConnectorLocks::new("drift", cluster.clone());
        self.cluster = cluster;
        self
    }

    /// Keeps consent flows in `flows` (before the service is shared): the in-memory table by
    /// default; [`FlowStore::postgres`] when several replicas share a database.
    pub fn with_flows(mut self, flows: FlowStore) -> Self {
        self.flows = flows;
        self
    }

    /// Keeps consent result pages in `results` (before the service is shared): in memory by
    /// default; [`ResultStore::postgres`] so any replica shows the page the callback made.
    pub fn with_results(mut self, results: ResultStore) -> Self {
        self.results = results;
        self
    }

    /// Sets when failed revocations are tried again (before the service is shared).
    pub fn with_revocation_backoff(mut self, backoff: RetryBackoff) -> Self {
        self.revocation_backoff = backoff;
        self
    }

    /// Drops the connector's open consent flows after its disconnect or removal was recorded.
    /// A failure is logged, not returned: the recorded event already makes any such flow
    /// useless (a callback finishing it finds the connector moved on and discards the tokens),
    /// so revocation and shredding must go ahead.
    pub(crate) async fn cancel_flows(&self, connector_id: &str) {
        if let Err(e) = self.flows.cancel_connector(connector_id).await {
            tracing::warn!(error = %e, "a connector's consent flows could not be dropped; they can no longer complete");
        }
    }

    /// Connector names' claims in the log (unique across replicas).
    pub(crate) fn name_claims(&self) -> crate::store::name_claims::NameClaims {
        crate::store::name_claims::NameClaims::new(self.log.clone())
    }

    /// Ends background work (revocation retries, the refresher, drift checks).
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once [`ConnectorService::stop`] was called.
    pub(crate) fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stopping.subscribe();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }

    /// A shared handle on the vault (key rotation runs beside the service).
    pub fn vault_handle(&self) -> Arc<Vault> {
        self.vault.clone()
    }

    /// The vault (tests and operators' tools read sealed state through it).
    pub fn vault(&self) -> &Vault {
        &self.vault
    }

    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The connector named `name`, from the status view.
    pub fn view(&self, name: &str) -> Result<ConnectorView, ServiceError> {
        self.projections
            .read(|p| p.connectors.get(name).cloned())
            .ok_or_else(|| ServiceError::NotFound(format!("connector {name:?} does not exist")))
    }

    /// Runs one command and waits until the projections have folded its events.
    pub(crate) async fn run(
        &self,
        connector_id: &str,
        name: &str,
        command: crate::domain::connector::ConnectorCommand,
        meta: &CommandMeta,
    ) -> Result<Committed<Connector>, ServiceError> {
        let committed = self
            .bus
            .execute(connector_id, command, meta)
            .await
            .map_err(|e| command_error(name, e))?;
        if let Some(a) = committed.appended {
            self.projections.wait_for(a.last_seq, SETTLE).await?;
        }
        Ok(committed)
    }

    /// Reads a sealed secret on a blocking thread.
    pub(crate) async fn secret(
        &self,
        slot: crate::vault::Slot,
        field: crate::vault::Field,
    ) -> Result<Option<SecretString>, ServiceError> {
        let vault = self.vault.clone();
        tokio::task::spawn_blocking(move || vault.open_secret(&slot, field))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(ServiceError::from)
    }

    /// A scrubber for every secret AGP holds for the connector: its client secret and
    /// registration access token, the tokens (or static credential) of `generation`, and `extra` (e.g. a code or a
    /// PKCE verifier in flight). Peer-supplied text goes through it before it is logged,
    /// recorded or returned (S27). `None` when the vault cannot be read: the caller withholds
    /// the text rather than pass it on unscrubbed.
    pub(crate) async fn scrubber(
        &self,
        connector_id: &str,
        generation: u64,
        extra: &[&SecretString],
    ) -> Option<crate::proxy::scrub::Scrubber> {
        use crate::vault::{Field, Slot};
        use secrecy::ExposeSecret;
        let vault = self.vault.clone();
        let id = connector_id.to_string();
        let sealed = tokio::task::spawn_blocking(move || {
            let client = Slot::client(&id);
            let grant = Slot::consent(&id, generation);
            let mut out = Vec::new();
            for (slot, field) in [
                (&client, Field::ClientSecret),
                (&client, Field::RegistrationAccessToken),
                (&grant, Field::AccessToken),
                (&grant, Field::RefreshToken),
            ] {
                if generation == Slot::CLIENT_GENERATION && slot == &grant {
                    continue;
                }
                out.extend(vault.open_secret(slot, field)?);
            }
            // A static server's credential: each of its values.
            if generation != Slot::CLIENT_GENERATION
                && let Some(sealed) = vault.open_secret(&grant, Field::StaticCredential)?
                && let Ok(c) = crate::connectors::injected::UpstreamCredential::from_sealed(&sealed)
            {
                out.extend(c.secrets().cloned());
            }
            Ok::<_, crate::vault::VaultError>(out)
        })
        .await
        .ok()?
        .ok()?;
        Some(crate::proxy::scrub::Scrubber::for_secrets(
            sealed
                .iter()
                .chain(extra.iter().copied())
                .map(|s| s.expose_secret()),
        ))
    }

    /// `text` (peer-supplied) scrubbed of the connector's secrets ([`Self::scrubber`]); withheld
    /// when they cannot be read.
    pub(crate) async fn scrub(
        &self,
        connector_id: &str,
        generation: u64,
        extra: &[&SecretString],
        text: &str,
    ) -> String {
        match self.scrubber(connector_id, generation, extra).await {
            Some(s) => s.scrubbed(text),
            None => "(details withheld: the connector's secrets could not be read to scrub them)"
                .to_string(),
        }
    }

    /// Seals a secret on a blocking thread; returns once it is durable.
    pub(crate) async fn seal(
        &self,
        slot: crate::vault::Slot,
        field: crate::vault::Field,
        secret: SecretString,
    ) -> Result<(), ServiceError> {
        let vault = self.vault.clone();
        tokio::task::spawn_blocking(move || vault.seal(&slot, field, &secret))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(ServiceError::from)
    }
}

/// The flow table could not be used: 503, naming the step (never a secret).
pub(crate) fn flow_unavailable(e: super::flows::FlowError) -> ServiceError {
    ServiceError::Unavailable(format!("consent flows: {e}"))
}

/// Lifts a connector command failure into a service error naming the connector.
pub(crate) fn command_error(
    name: &str,
    e: cqrs_es::AggregateError<ConnectorError>,
) -> ServiceError {
    use cqrs_es::AggregateError as A;
    match e {
        A::UserError(e) => {
            let msg = format!("connector {name:?}: {e}");
            match e {
                ConnectorError::NotFound
                | ConnectorError::Removed
                | ConnectorError::ToolNotRegistered(_) => ServiceError::NotFound(msg),
                ConnectorError::ConfirmationMismatch { .. }
                | ConnectorError::Required(_)
                | ConnectorError::ReasonRequired => ServiceError::Invalid(msg),
                _ => ServiceError::Conflict(msg),
            }
        }
        A::AggregateConflict => ServiceError::Conflict(format!(
            "connector {name:?} was modified concurrently; retry"
        )),
        other => ServiceError::Unavailable(other.to_string()),
    }
}

/// Short, non-reversible fingerprint of a secret for events and views (first 12 hex of SHA-256).
pub fn fingerprint(secret: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(secret.as_bytes()))
        .chars()
        .take(12)
        .collect()
}
