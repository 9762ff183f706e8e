//! Add and reconnect: discovery, client registration, and the start of a consent flow.

use chrono::{DateTime, Utc};
use oauth2::PkceCodeChallenge;
use secrecy::SecretString;
use url::Url;

use super::{ConnectorService, ServiceError, fingerprint, flow_unavailable};
use crate::connectors::flows::{FLOW_TTL, Flow};
use crate::domain::ResourceName;
use crate::domain::connector::{
    ConnectorCommand, DiscoveredMetadata, Overrides, Registration, TokenAuthMethod, client_auth,
};
use crate::domain::security::NameKind;
use crate::oauth::cimd;
use crate::oauth::discovery::{Discovery, DiscoveryOptions, discover};
use crate::oauth::registration::{RegistrationRequest, register};
use crate::projections::connectors::ConnectorView;
use crate::store::aggregate_store::CommandMeta;
use crate::vault::{Field, Slot};

/// How AGP becomes an OAuth client of the provider: the admin's `--registration`, or `Auto`.
pub enum ClientChoice {
    /// Not forced: a Client ID Metadata Document when the authorization server advertises
    /// `client_id_metadata_document_supported`, else DCR (the MCP spec's order after a
    /// registered client, which needs a client id and so is never chosen without one).
    Auto,
    /// A Client ID Metadata Document served by AGP (`--registration cimd`).
    Cimd,
    /// Dynamic Client Registration (`--registration dcr`, `--dcr`).
    Dcr,
    Registered {
        client_id: String,
        client_secret: Option<SecretString>,
        /// The admin's `--token-auth-method`; `None` = chosen from the server's metadata.
        method: Option<TokenAuthMethod>,
    },
}

/// A validated `connectors add` request.
pub struct AddConnector {
    pub name: ResourceName,
    pub mcp_server_url: Url,
    pub client: ClientChoice,
    pub client_name: Option<String>,
    /// The admin's scopes; `None` = what the server advertises.
    pub scopes: Option<Vec<String>>,
    pub overrides: Overrides,
}

/// A started consent: the connector as it now stands and the URL the admin opens.
#[derive(Debug, Clone)]
pub struct Consent {
    pub connector: ConnectorView,
    /// AGP's consent URL (`<public>/connect/start/<flow>`): binds the flow to the browser that
    /// opens it, then redirects to the provider.
    pub authorize_url: String,
    pub expires_at: DateTime<Utc>,
}

fn discovery_error(e: crate::oauth::discovery::DiscoveryError) -> ServiceError {
    use crate::oauth::discovery::DiscoveryErrorKind as K;
    let last = e.steps.last().cloned().unwrap_or_default();
    let msg = if last.is_empty() {
        format!("discovery failed: {}", e.kind)
    } else {
        format!("discovery failed: {} (last step: {last})", e.kind)
    };
    match e.kind {
        K::InvalidServerUrl { .. } | K::InvalidOverride { .. } => ServiceError::Invalid(msg),
        _ => ServiceError::Provider(msg),
    }
}

impl ConnectorService {
    async fn discover(&self, url: &Url, overrides: &Overrides) -> Result<Discovery, ServiceError> {
        let options = DiscoveryOptions {
            allow_missing_pkce_metadata: self.allow_missing_pkce_metadata,
        };
        discover(&self.egress, url, overrides, &options)
            .await
            .map_err(discovery_error)
    }

    /// Registers AGP at the provider by DCR; seals the secrets under `connector_id`.
    async fn register_dcr(
        &self,
        connector_id: &str,
        discovery: &Discovery,
        client_name: &str,
    ) -> Result<ConnectorCommand, ServiceError> {
        let Some(endpoint) = &discovery.registration_endpoint else {
            return Err(ServiceError::Invalid(
                "the provider does not support Dynamic Client Registration (it advertises no \
                 registration endpoint): register an app at the provider with the redirect URI \
                 shown by `agp connectors show`, then add the connector with \
                 --client-id/--client-secret (and --token-auth-method)"
                    .into(),
            ));
        };
        let asked = client_auth::for_registration(
            discovery.token_endpoint_auth_methods_supported.as_deref(),
        )
        .map_err(|e| ServiceError::Provider(format!("client registration impossible: {e}")))?;
        let request = RegistrationRequest {
            token_endpoint_auth_method: asked.method,
            client_name: client_name.to_string(),
            redirect_uri: Url::parse(&self.redirect_uri)
                .map_err(|e| ServiceError::Internal(format!("redirect URI: {e}")))?,
            // No `scope` at registration: providers validate it against their own list (which
            // often omits the resource server's scopes) and the authorization request names
            // the scopes anyway.
            scope: None,
        };
        let registered = register(&self.egress, endpoint, &request)
            .await
            .map_err(|e| ServiceError::Provider(format!("client registration failed: {e}")))?;
        let token_auth_method_reason = if registered.token_endpoint_auth_method == asked.method {
            asked.reason
        } else {
            format!(
                "asked for {} ({}); the provider registered {}",
                asked.method.as_str(),
                asked.reason,
                registered.token_endpoint_auth_method.as_str()
            )
        };
        let slot = Slot::client(connector_id);
        let secret_stored = registered.client_secret.is_some();
        if let Some(secret) = registered.client_secret {
            self.seal(slot.clone(), Field::ClientSecret, secret).await?;
        }
        let rat_stored = registered.registration_access_token.is_some();
        if let Some(rat) = registered.registration_access_token {
            self.seal(slot, Field::RegistrationAccessToken, rat).await?;
        }
        Ok(ConnectorCommand::RecordClientRegistration {
            issuer: discovery.issuer.clone().unwrap_or_default(),
            client_id: registered.client_id,
            token_auth_method: registered.token_endpoint_auth_method,
            token_auth_method_reason,
            client_secret_stored: secret_stored,
            registration_access_token_stored: rat_stored,
        })
    }

    /// AGP's Client ID Metadata Document registration for `connector_id`, or why the server
    /// cannot take one (the message names the missing metadata or the unusable URL).
    fn register_cimd(
        &self,
        connector_id: &str,
        discovery: &Discovery,
    ) -> Result<Registration, String> {
        if !discovery.client_id_metadata_document_supported {
            return Err(format!(
                "the authorization server {} does not advertise \
                 client_id_metadata_document_supported in its metadata, so it will not fetch a \
                 client ID metadata document",
                discovery.issuer.as_deref().unwrap_or("(unknown issuer)")
            ));
        }
        let url = cimd::client_id_url(&self.public_url, connector_id, self.egress.policy())
            .map_err(|e| e.to_string())?;
        let choice = client_auth::for_metadata_document(
            discovery.token_endpoint_auth_methods_supported.as_deref(),
        )
        .map_err(|e| format!("{e}; a client ID metadata document can only use none"))?;
        Ok(Registration::Cimd {
            client_id: url.to_string(),
            token_auth_method: choice.method,
            token_auth_method_reason: choice.reason,
        })
    }

    /// The registration for `choice` (other than a registered client) and why it was chosen:
    /// CIMD first when not forced, then DCR (MCP authorization spec 2025-11-25, "Client
    /// Registration Approaches"). Seals DCR's secrets under `connector_id`; stores nothing
    /// when it fails.
    async fn choose_registration(
        &self,
        choice: &ClientChoice,
        connector_id: &str,
        discovery: &Discovery,
        client_name: &str,
    ) -> Result<(Registration, String, Option<ConnectorCommand>), ServiceError> {
        let why_not_cimd = match choice {
            ClientChoice::Cimd => {
                let registration = self
                    .register_cimd(connector_id, discovery)
                    .map_err(|why| ServiceError::Invalid(format!("registration cimd: {why}")))?;
                let reason = "forced by the admin (registration cimd)".to_string();
                return Ok((registration, reason, None));
            }
            ClientChoice::Auto => match self.register_cimd(connector_id, discovery) {
                Ok(registration) => {
                    let reason = "the authorization server advertises \
                                  client_id_metadata_document_supported, which the MCP spec \
                                  prefers to DCR"
                        .to_string();
                    return Ok((registration, reason, None));
                }
                Err(why) => Some(why),
            },
            ClientChoice::Dcr | ClientChoice::Registered { .. } => None,
        };
        let cmd = self
            .register_dcr(connector_id, discovery, client_name)
            .await
            .map_err(|e| match (&why_not_cimd, e) {
                (Some(why), ServiceError::Invalid(msg)) => {
                    ServiceError::Invalid(format!("no client ID metadata document ({why}); {msg}"))
                }
                (_, e) => e,
            })?;
        let reason = match why_not_cimd {
            Some(why) => format!("Dynamic Client Registration: {why}"),
            None => "forced by the admin (registration dcr)".to_string(),
        };
        Ok((Registration::Dcr, reason, Some(cmd)))
    }

    /// Adds a connector and starts its first consent. On a shared log the name is claimed
    /// (unique across replicas, [`crate::store::name_claims`]) after discovery, which only
    /// reads — so a provider that cannot be used still leaves nothing in the log — and before
    /// registration, so two replicas never both register a client for one name; the claim is
    /// released if the connector is then not created.
    pub async fn add(
        &self,
        req: AddConnector,
        meta: &CommandMeta,
    ) -> Result<Consent, ServiceError> {
        let name = req.name.to_string();
        let _claim = self.naming.lock().await;
        let exists = || ServiceError::Conflict(format!("connector {name:?} already exists"));
        if self.projections.read(|p| p.connectors.get(&name).is_some()) {
            return Err(exists());
        }
        let discovery = self.discover(&req.mcp_server_url, &req.overrides).await?;
        let connector_id = uuid::Uuid::now_v7().to_string();
        let claims = self.name_claims();
        claims
            .claim(NameKind::Connector, &req.name, &connector_id, meta)
            .await
            .map_err(|e| e.or_taken(exists))?;
        let resource_name = req.name.clone();
        let added = self.add_claimed(req, discovery, &connector_id, meta).await;
        if added.is_err() {
            claims
                .abandon(NameKind::Connector, &resource_name, &connector_id, meta)
                .await;
        }
        added
    }

    /// [`ConnectorService::add`] once the name is claimed for `connector_id`.
    async fn add_claimed(
        &self,
        req: AddConnector,
        discovery: Discovery,
        connector_id: &str,
        meta: &CommandMeta,
    ) -> Result<Consent, ServiceError> {
        let name = req.name.to_string();
        let connector_id = connector_id.to_string();
        let scopes = req
            .scopes
            .clone()
            .unwrap_or_else(|| discovery.default_scopes());
        let client_name = req
            .client_name
            .clone()
            .unwrap_or_else(|| format!("AGP {name}"));
        let (registration, registration_reason, registered) = match req.client {
            ClientChoice::Auto | ClientChoice::Cimd | ClientChoice::Dcr => {
                self.choose_registration(&req.client, &connector_id, &discovery, &client_name)
                    .await?
            }
            ClientChoice::Registered {
                client_id,
                client_secret,
                method,
            } => {
                let stored = client_secret.is_some();
                let choice = client_auth::for_registered_client(
                    method,
                    discovery.token_endpoint_auth_methods_supported.as_deref(),
                    stored,
                )
                .map_err(|e| {
                    ServiceError::Invalid(format!(
                        "{e}: give the method the provider configured for this client with \
                         --token-auth-method"
                    ))
                })?;
                if let Some(secret) = client_secret {
                    self.seal(Slot::client(&connector_id), Field::ClientSecret, secret)
                        .await?;
                }
                (
                    Registration::Client {
                        client_id,
                        token_auth_method: choice.method,
                        token_auth_method_reason: choice.reason,
                        client_secret_stored: stored,
                    },
                    "a client registered at the provider was given (client id): the MCP spec's \
                     first choice"
                        .to_string(),
                    None,
                )
            }
        };
        let add = ConnectorCommand::Add {
            connector_id: connector_id.clone(),
            name: req.name.clone(),
            mcp_server_url: req.mcp_server_url.to_string(),
            client_name,
            registration,
            registration_reason: Some(registration_reason),
            scopes: req.scopes.clone(),
            overrides: req.overrides.clone(),
        };
        self.run(&connector_id, &name, add, meta).await?;
        let metadata = DiscoveredMetadata::from(&discovery);
        self.run(
            &connector_id,
            &name,
            ConnectorCommand::RecordDiscovery { metadata },
            meta,
        )
        .await?;
        if let Some(cmd) = registered {
            self.run(&connector_id, &name, cmd, meta).await?;
        }
        self.start_consent(&connector_id, &name, &discovery, scopes, meta)
            .await
    }

    /// Starts a fresh consent on an existing connector: discovery again (endpoints may have
    /// moved), a new registration if the issuer changed under DCR, then a new flow.
    pub async fn reconnect(
        self: &std::sync::Arc<Self>,
        name: &str,
        meta: &CommandMeta,
    ) -> Result<Consent, ServiceError> {
        let view = self.view(name)?;
        if view.is_static() {
            return Err(ServiceError::Conflict(format!(
                "{name:?} is a server with a static credential: there is no consent to run; set a new credential with `agp servers rotate-credential`"
            )));
        }
        let overrides = self
            .projections
            .read(|p| p.connectors.overrides(&view.connector_id).cloned())
            .unwrap_or_default();
        let url = Url::parse(&view.mcp_server_url)
            .map_err(|e| ServiceError::Internal(format!("stored MCP URL: {e}")))?;
        let discovery = self.discover(&url, &overrides).await?;
        let scopes = if view.scopes_overridden {
            view.scopes.clone()
        } else {
            discovery.default_scopes()
        };
        if view.registration_mode == "cimd" && !discovery.client_id_metadata_document_supported {
            return Err(ServiceError::Provider(format!(
                "connector {name:?} uses a client ID metadata document, but the authorization \
                 server {} no longer advertises client_id_metadata_document_supported; remove \
                 the connector and add it again with another registration",
                discovery.issuer.clone().unwrap_or_default()
            )));
        }
        let issuer_moved = view.client_issuer.is_some() && view.client_issuer != discovery.issuer;
        if issuer_moved {
            if view.registration_mode != "dcr" {
                return Err(ServiceError::Conflict(format!(
                    "connector {name:?}: the provider's issuer changed from {:?} to {:?}; the \
                     registered client belongs to the old issuer — remove the connector and add \
                     it again with a client registered at the new one",
                    view.client_issuer.unwrap_or_default(),
                    discovery.issuer.clone().unwrap_or_default()
                )));
            }
            let cmd = self
                .register_dcr(&view.connector_id, &discovery, &view.client_name)
                .await?;
            self.run(&view.connector_id, name, cmd, meta).await?;
        }
        let metadata = DiscoveredMetadata::from(&discovery);
        self.run(
            &view.connector_id,
            name,
            ConnectorCommand::RecordDiscovery { metadata },
            meta,
        )
        .await?;
        self.flows
            .cancel_connector(&view.connector_id)
            .await
            .map_err(flow_unavailable)?;
        let consent = self
            .start_consent(&view.connector_id, name, &discovery, scopes, meta)
            .await?;
        // The previous generation is stale now (nothing can refresh or serve it): revoke its
        // tokens at the provider and destroy them, as a disconnect would.
        if self.holds_tokens(&view).await? {
            self.revoke_and_shred(&view, meta).await?;
        }
        Ok(Consent {
            connector: self.view(name)?,
            ..consent
        })
    }

    /// True when the vault still holds tokens of `view`'s current generation.
    async fn holds_tokens(&self, view: &ConnectorView) -> Result<bool, ServiceError> {
        if view.generation == 0 {
            return Ok(false);
        }
        let slot = Slot::consent(&view.connector_id, view.generation);
        let vault = self.vault.clone();
        tokio::task::spawn_blocking(move || {
            Ok::<_, crate::vault::VaultError>(
                vault.has(&slot, Field::AccessToken)? || vault.has(&slot, Field::RefreshToken)?,
            )
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::from)
    }

    /// Appends `consent_started` (next generation) and registers the flow.
    async fn start_consent(
        &self,
        connector_id: &str,
        name: &str,
        discovery: &Discovery,
        scopes: Vec<String>,
        meta: &CommandMeta,
    ) -> Result<Consent, ServiceError> {
        let view = self.view(name)?;
        let client_id = view.client_id.clone().ok_or_else(|| {
            ServiceError::Conflict(format!("connector {name:?} has no OAuth client yet"))
        })?;
        let (flow_id, state) = self.flows.reserve();
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let mut provider = discovery.authorization_endpoint.clone();
        {
            let mut q = provider.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair("state", &state)
                .append_pair("code_challenge", challenge.as_str())
                .append_pair("code_challenge_method", "S256");
            if !scopes.is_empty() {
                q.append_pair("scope", &scopes.join(" "));
            }
            if let Some(r) = &discovery.resource {
                q.append_pair("resource", r);
            }
            if let Some(a) = &view.audience {
                q.append_pair("audience", a);
            }
            // The admin's extra parameters (Google's `access_type=offline`, …); never one of
            // the above (refused when the connector was added).
            for (k, v) in &view.authorize_params {
                q.append_pair(k, v);
            }
        }
        let expires_at = Utc::now()
            + chrono::Duration::from_std(FLOW_TTL)
                .unwrap_or_else(|_| chrono::Duration::minutes(10));
        let committed = {
            // Under custody: a refresh finishing now sees the new generation and seals nothing.
            let _custody = self.custody.lock(connector_id).await?;
            self.run(
                connector_id,
                name,
                ConnectorCommand::StartConsent {
                    flow_id: fingerprint(&flow_id),
                    requested_scopes: scopes.clone(),
                    expires_at,
                },
                meta,
            )
            .await?
        };
        self.flows
            .insert(
                &flow_id,
                Flow {
                    connector_id: connector_id.to_string(),
                    connector_name: name.to_string(),
                    generation: committed.aggregate.generation,
                    pkce_verifier: SecretString::from(verifier.secret().to_string()),
                    issuer: discovery.issuer.clone(),
                    iss_required: discovery.iss_parameter_supported,
                    authorize_url: provider.to_string(),
                    token_endpoint: discovery.token_endpoint.to_string(),
                    userinfo_endpoint: discovery.userinfo_endpoint.as_ref().map(Url::to_string),
                    redirect_uri: self.redirect_uri.clone(),
                    resource: discovery.resource.clone(),
                    audience: view.audience.clone(),
                    scopes,
                },
            )
            .await
            .map_err(flow_unavailable)?;
        Ok(Consent {
            connector: self.view(name)?,
            authorize_url: format!("{}/connect/start/{flow_id}", self.public_url),
            expires_at,
        })
    }
}
