//! Static-credential servers (`agp servers add`): MCP servers that take an API key header, a
//! bearer token, or no credential at all, governed on the same path as connectors — tool
//! discovery and registration, grants, policy, approvals, audit, rug-pull checks — with the
//! credential sealed in the vault and injected server-side.
//!
//! Each credential is one generation: `add` sets generation 1, every rotation the next one,
//! and the previous generation's data keys are destroyed once the new one is recorded (S13).
//! There is no OAuth here, so nothing can be revoked at the provider: a disconnect or a removal
//! stops serving and shreds the credential, and says that the key itself is the admin's to
//! revoke where it was issued.
//!
//! Order, as for connectors: everything is checked (the URL against the egress guard, the
//! credential, a probe of the server with it) before anything is appended; the credential is
//! sealed before the event that says it exists.

use url::Url;

use super::{ConnectorService, ServiceError};
use crate::connectors::injected::UpstreamCredential;
use crate::connectors::upstream;
use crate::domain::ResourceName;
use crate::domain::connector::{ConnectorCommand, Overrides, Registration};
use crate::domain::security::NameKind;
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;
use crate::vault::{Field, Slot};

/// What a disconnect or removal of a static server says about the key itself.
pub const NOT_REVOCABLE: &str = "a static credential cannot be revoked by AGP: AGP no longer holds it (its keys are destroyed); revoke or rotate the key where it was issued if it may have leaked";

/// A validated `servers add` request.
pub struct AddServer {
    pub name: ResourceName,
    pub mcp_server_url: Url,
    pub credential: UpstreamCredential,
}

impl ConnectorService {
    /// Adds a static-credential server: checks the URL and probes the server with the
    /// credential (initialize and tools/list), then records it, seals the credential and
    /// records it set. Active on return.
    pub async fn add_server(
        &self,
        req: AddServer,
        meta: &CommandMeta,
    ) -> Result<ConnectorView, ServiceError> {
        let name = req.name.to_string();
        let _claim = self.naming.lock().await;
        let exists = || {
            ServiceError::Conflict(format!(
                "a connector or server named {name:?} already exists"
            ))
        };
        if self.projections.read(|p| p.connectors.get(&name).is_some()) {
            return Err(exists());
        }
        self.egress.check_url(&req.mcp_server_url).map_err(|e| {
            ServiceError::Invalid(format!(
                "mcp_server_url: {e} (AGP sends a credential only over https, or to an http host on the egress allow list)"
            ))
        })?;
        self.probe(&name, &req.mcp_server_url, &req.credential)
            .await?;
        // On a shared log, claimed (unique across replicas) after the probe, so a server that
        // cannot be used leaves nothing in the log; released if the server is then not
        // created.
        let connector_id = uuid::Uuid::now_v7().to_string();
        let claims = self.name_claims();
        claims
            .claim(NameKind::Connector, &req.name, &connector_id, meta)
            .await
            .map_err(|e| e.or_taken(exists))?;
        let added = self.record_server(&req, &connector_id, meta).await;
        if added.is_err() {
            claims
                .abandon(NameKind::Connector, &req.name, &connector_id, meta)
                .await;
        }
        added
    }

    /// Records the probed server `req` as `connector_id` (its name claimed) and its credential.
    async fn record_server(
        &self,
        req: &AddServer,
        connector_id: &str,
        meta: &CommandMeta,
    ) -> Result<ConnectorView, ServiceError> {
        let name = req.name.to_string();
        let add = ConnectorCommand::Add {
            registration_reason: None,
            connector_id: connector_id.to_string(),
            name: req.name.clone(),
            mcp_server_url: req.mcp_server_url.to_string(),
            client_name: String::new(),
            registration: Registration::Static,
            scopes: None,
            overrides: Overrides::default(),
        };
        self.run(connector_id, &name, add, meta).await?;
        self.set_credential(connector_id, &name, 1, &req.credential, meta)
            .await?;
        self.view(&name)
    }

    /// Replaces the credential of static server `name` with `credential` (probed first):
    /// sealed as the next generation, recorded, then the previous generation's keys are
    /// destroyed. Also brings a disconnected server back.
    pub async fn rotate_credential(
        &self,
        name: &str,
        credential: UpstreamCredential,
        meta: &CommandMeta,
    ) -> Result<ConnectorView, ServiceError> {
        let view = self.static_view(name)?;
        let url = Url::parse(&view.mcp_server_url)
            .map_err(|e| ServiceError::Internal(format!("stored MCP URL: {e}")))?;
        self.probe(name, &url, &credential).await?;
        let _custody = self.custody.lock(&view.connector_id).await?;
        let current = self.static_view(name)?;
        if current.connector_id != view.connector_id {
            return Err(ServiceError::Conflict(format!(
                "server {name:?} was replaced meanwhile; retry"
            )));
        }
        let previous = current.generation;
        self.set_credential(&current.connector_id, name, previous + 1, &credential, meta)
            .await?;
        if previous > 0 && !current.credentials_shredded {
            self.shred(&current, previous, meta).await?;
        }
        self.view(name)
    }

    /// Seals `credential` for `generation`, then records it (durable before use, S9).
    async fn set_credential(
        &self,
        connector_id: &str,
        name: &str,
        generation: u64,
        credential: &UpstreamCredential,
        meta: &CommandMeta,
    ) -> Result<(), ServiceError> {
        let sealed = credential
            .sealed()
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        self.seal(
            Slot::consent(connector_id, generation),
            Field::StaticCredential,
            sealed,
        )
        .await?;
        let cmd = ConnectorCommand::SetCredential {
            header_names: credential.header_names(),
            bearer: credential.has_bearer(),
            credential_fingerprint: credential.fingerprint(),
        };
        self.run(connector_id, name, cmd, meta).await?;
        Ok(())
    }

    /// Connects to the server with `credential` and lists its tools: a wrong key, a server
    /// that wants OAuth or one that is not an MCP server is refused before anything is stored.
    async fn probe(
        &self,
        name: &str,
        url: &Url,
        credential: &UpstreamCredential,
    ) -> Result<(), ServiceError> {
        match upstream::list_tools(&self.egress, url, credential, upstream::Keep::All).await {
            Ok(_) => Ok(()),
            Err(e) => {
                // rmcp's and upstream's text: scrubbed of the credential before it is returned.
                let scrubber = credential.scrubber();
                let text = scrubber.scrubbed(&e.to_string());
                // rmcp says "Auth required" for a 401 that carries an authorization challenge.
                let refused = ["401", "403"]
                    .into_iter()
                    .find(|code| text.contains(&format!("HTTP {code}")))
                    .or_else(|| text.contains("Auth required").then_some("401"));
                Err(ServiceError::Provider(match refused {
                    Some(code) => format!(
                        "server {name:?} refused the credential (HTTP {code}); if it uses OAuth, add it with `agp connectors add` instead; nothing was stored"
                    ),
                    None => {
                        // rmcp names its transport's Rust types before the cause: keep the cause.
                        let cause = text.rsplit("] error: ").next().unwrap_or(&text);
                        format!(
                            "server {name:?} could not be reached with this credential: {cause}; nothing was stored"
                        )
                    }
                }))
            }
        }
    }

    /// The view of `name`, which must be a static-credential server.
    fn static_view(&self, name: &str) -> Result<ConnectorView, ServiceError> {
        let view = self.view(name)?;
        if !view.is_static() {
            return Err(ServiceError::Conflict(format!(
                "{name:?} is an OAuth connector, not a static-credential server: reconnect it with `agp connectors reconnect`"
            )));
        }
        Ok(view)
    }
}
