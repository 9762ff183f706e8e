//! Connected agents' MCP sessions: which agent each belongs to (S15), and telling them
//! `notifications/tools/list_changed` when what their agent sees changes.
//!
//! A session is bound to the agent whose request created it (the `Mcp-Session-Id` rmcp put on
//! the `initialize` response); [`super::auth`] refuses it to anyone else. Once the client sends
//! `notifications/initialized`, the session's peer is attached, with a fingerprint of the tool
//! list the agent could see then.
//!
//! [`spawn_watch`] runs beside the server: whenever an event that can change visibility is
//! folded (grants, suspension, catalog, connector status — anything but a call record), it
//! recomputes each connected agent's fingerprint and notifies the sessions whose list changed;
//! sessions of revoked agents are closed. Every 30 s it also drops bindings rmcp no longer
//! knows and closes idle upstream sessions.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use rmcp::Peer;
use rmcp::service::RoleServer;
use rmcp::transport::common::server_side_http::SessionId;
use rmcp::transport::streamable_http_server::session::SessionManager;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;

use super::{Proxy, visible_entries};
use crate::projections::ProjectionSet;

struct Session {
    agent_id: String,
    peer: Option<Peer<RoleServer>>,
    /// Fingerprint of the tool list the session was last told about.
    seen: u64,
}

/// Sessions by id.
#[derive(Default)]
pub struct Sessions {
    inner: parking_lot::Mutex<HashMap<String, Session>>,
}

/// A fingerprint of what an agent of `profile_id` sees: names and pinned definitions.
pub fn visibility_fingerprint(p: &ProjectionSet, profile_id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    for e in visible_entries(p, profile_id) {
        e.name.hash(&mut h);
        e.definition_hash.hash(&mut h);
        e.version.hash(&mut h);
    }
    h.finish()
}

impl Sessions {
    /// The agent session `id` belongs to.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.inner.lock().get(id).map(|s| s.agent_id.clone())
    }

    /// How many sessions `agent_id` holds.
    pub fn count_for(&self, agent_id: &str) -> usize {
        self.inner
            .lock()
            .values()
            .filter(|s| s.agent_id == agent_id)
            .count()
    }

    /// Binds a new session to the agent that created it.
    pub fn bind(&self, id: &str, agent_id: &str) {
        self.inner.lock().entry(id.to_string()).or_insert(Session {
            agent_id: agent_id.to_string(),
            peer: None,
            seen: 0,
        });
    }

    /// Attaches the peer of an initialized session (only the owner's).
    pub fn attach(&self, id: &str, agent_id: &str, peer: Peer<RoleServer>, seen: u64) {
        if let Some(s) = self.inner.lock().get_mut(id)
            && s.agent_id == agent_id
        {
            s.peer = Some(peer);
            s.seen = seen;
        }
    }

    pub fn remove(&self, id: &str) {
        self.inner.lock().remove(id);
    }

    fn ids(&self) -> Vec<String> {
        self.inner.lock().keys().cloned().collect()
    }
}

/// What to do with one session after a visibility change.
enum Action {
    Notify(Peer<RoleServer>),
    Close,
}

/// Recomputes fingerprints and decides, per session, whether to notify it or close it.
fn plan(proxy: &Proxy) -> Vec<(String, Action)> {
    let mut sessions = proxy.sessions.inner.lock();
    proxy.projections.read(|p| {
        let mut by_profile: HashMap<String, u64> = HashMap::new();
        let mut out = Vec::new();
        for (id, s) in sessions.iter_mut() {
            let Some(agent) = p
                .grants
                .agent_by_id(&s.agent_id)
                .filter(|a| a.status == "active")
            else {
                out.push((id.clone(), Action::Close));
                continue;
            };
            let fp = *by_profile
                .entry(agent.profile_id.clone())
                .or_insert_with(|| visibility_fingerprint(p, &agent.profile_id));
            if fp != s.seen
                && let Some(peer) = &s.peer
            {
                s.seen = fp;
                out.push((id.clone(), Action::Notify(peer.clone())));
            }
        }
        out
    })
}

/// Closes upstream sessions that are idle or whose connector moved on.
fn sweep_upstream(proxy: &Proxy) {
    let valid: HashMap<String, u64> = proxy.projections.read(|p| {
        p.connectors
            .list()
            .into_iter()
            .filter(|c| c.status == "active")
            .map(|c| (c.connector_id.clone(), c.generation))
            .collect()
    });
    let closed = proxy
        .pool
        .sweep(proxy.config.upstream_idle, |connector_id, pooled| {
            valid.get(connector_id) == Some(&pooled.generation)
        });
    if closed > 0 {
        tracing::debug!(closed, "closed upstream sessions");
    }
}

/// Runs the watcher until `stop` turns true.
pub fn spawn_watch(
    proxy: Arc<Proxy>,
    manager: Arc<LocalSessionManager>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut visibility = proxy.projections.subscribe_visibility();
        let mut last = proxy.projections.read(|p| p.visibility_seq);
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ticked = tokio::select! {
                changed = visibility.changed() => if changed.is_err() { return } else { false },
                _ = tick.tick() => true,
                _ = stop.wait_for(|s| *s) => return,
            };
            if ticked {
                for id in proxy.sessions.ids() {
                    let known = manager.has_session(&SessionId::from(id.as_str())).await;
                    if !known.unwrap_or(false) {
                        proxy.sessions.remove(&id);
                    }
                }
                sweep_upstream(&proxy);
                continue;
            }
            let seen = proxy.projections.read(|p| p.visibility_seq);
            if seen == last {
                continue;
            }
            last = seen;
            sweep_upstream(&proxy);
            for (id, action) in plan(&proxy) {
                match action {
                    Action::Notify(peer) => {
                        let sent = tokio::time::timeout(
                            Duration::from_secs(5),
                            peer.notify_tool_list_changed(),
                        )
                        .await;
                        if !matches!(sent, Ok(Ok(()))) {
                            tracing::debug!(session = %id, "list_changed not delivered");
                        }
                    }
                    Action::Close => {
                        let _ = manager.close_session(&SessionId::from(id.as_str())).await;
                        proxy.sessions.remove(&id);
                    }
                }
            }
        }
    });
}
