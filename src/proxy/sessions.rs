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
//! sessions of revoked agents are closed. On a tick (every 30 s, or a quarter of the idle limit
//! when that is shorter) it closes idle agent sessions, drops bindings rmcp no longer knows and
//! closes idle upstream sessions.
//!
//! **Idle** is counted here, not by rmcp: a session is idle when no request of any kind has
//! reached it for [`super::ProxyConfig::session_idle`] and none is in progress. rmcp's own
//! keep-alive only sees what passes through its session worker, and the direct `tools/call` path
//! ([`super::direct`]) does not, so rmcp would expire a session while it is busiest. rmcp's
//! keep-alive is therefore off, and this watcher closes idle sessions (and any session rmcp
//! holds that was never bound to an agent, after one tick).

use std::collections::HashMap;
use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// When a request last reached the session or finished on it.
    last_active: Instant,
    /// Requests on the session still being answered (a held call, a streamed answer).
    in_flight: u32,
}

/// A request in progress on a session: the session is not idle while one lives, and its end
/// counts as activity.
pub struct Activity {
    proxy: Arc<Proxy>,
    id: String,
}

impl Drop for Activity {
    fn drop(&mut self) {
        if let Some(s) = self.proxy.sessions.inner.lock().get_mut(&self.id) {
            s.in_flight = s.in_flight.saturating_sub(1);
            s.last_active = Instant::now();
        }
    }
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
        e.name().hash(&mut h);
        e.definition_hash().hash(&mut h);
        e.version().hash(&mut h);
    }
    h.finish()
}

impl Sessions {
    /// The agent session `id` belongs to.
    pub fn owner(&self, id: &str) -> Option<String> {
        self.inner.lock().get(id).map(|s| s.agent_id.clone())
    }

    /// A request of `agent_id` reaches session `id`: `None` when the session is not theirs (or
    /// unknown). Otherwise the session is active now, and stays so until the returned
    /// [`Activity`] is dropped.
    pub fn enter(proxy: &Arc<Proxy>, id: &str, agent_id: &str) -> Option<Activity> {
        let mut sessions = proxy.sessions.inner.lock();
        let s = sessions.get_mut(id).filter(|s| s.agent_id == agent_id)?;
        s.last_active = Instant::now();
        s.in_flight += 1;
        Some(Activity {
            proxy: proxy.clone(),
            id: id.to_string(),
        })
    }

    /// Sessions with nothing in progress and no activity for `idle`.
    fn idle(&self, idle: Duration) -> Vec<String> {
        let now = Instant::now();
        self.inner
            .lock()
            .iter()
            .filter(|(_, s)| s.in_flight == 0 && now.duration_since(s.last_active) >= idle)
            .map(|(id, _)| id.clone())
            .collect()
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
            last_active: Instant::now(),
            in_flight: 0,
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

/// Closes rmcp sessions that were unbound at the last tick and still are; returns those
/// unbound now, for the next tick.
async fn close_strays(
    proxy: &Proxy,
    manager: &LocalSessionManager,
    before: HashSet<SessionId>,
) -> HashSet<SessionId> {
    let known: Vec<SessionId> = manager.sessions.read().await.keys().cloned().collect();
    let mut now = HashSet::new();
    for id in known {
        if proxy.sessions.owner(&id).is_some() {
            continue;
        }
        if before.contains(&id) {
            let _ = manager.close_session(&id).await;
        } else {
            now.insert(id);
        }
    }
    now
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
        let every = (proxy.config.session_idle / 4)
            .clamp(Duration::from_millis(100), Duration::from_secs(30));
        let mut tick = tokio::time::interval(every);
        // rmcp sessions seen unbound at the last tick.
        let mut strays: HashSet<SessionId> = HashSet::new();
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let ticked = tokio::select! {
                changed = visibility.changed() => if changed.is_err() { return } else { false },
                _ = tick.tick() => true,
                _ = stop.wait_for(|s| *s) => return,
            };
            if ticked {
                for id in proxy.sessions.idle(proxy.config.session_idle) {
                    tracing::debug!(session = %id, "closing an idle MCP session");
                    let _ = manager.close_session(&SessionId::from(id.as_str())).await;
                    proxy.sessions.remove(&id);
                }
                strays = close_strays(&proxy, &manager, strays).await;
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
