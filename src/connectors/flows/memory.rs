//! The in-memory flow table: the embedded (single-process) mode's backend, as it always was.
//! A restart invalidates open flows, which is safe: the admin starts a new one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{B64, Flow, FlowError, MAX_FLOWS, random};
use base64::Engine;

struct Entry {
    flow: Flow,
    created: Instant,
    /// SHA-256 of the binding cookie, once a browser opened the consent link.
    browser: Option<[u8; 32]>,
    /// For a consent started from the console: the SHA-256 of that console session's id; only
    /// a browser carrying that session may open the link.
    owner: Option<[u8; 32]>,
}

pub(super) struct MemoryFlows {
    flows: Mutex<HashMap<String, Entry>>,
    ttl: Duration,
}

impl MemoryFlows {
    pub(super) fn new(ttl: Duration) -> Self {
        Self {
            flows: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    pub(super) fn insert(&self, flow_id: &str, flow: Flow) {
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

    pub(super) fn bind_browser(
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

    pub(super) fn restrict(&self, flow_id: &str, owner: [u8; 32]) -> bool {
        let mut flows = self.flows.lock();
        match flows.get_mut(flow_id) {
            Some(entry) => {
                entry.owner = Some(owner);
                true
            }
            None => false,
        }
    }

    pub(super) fn check(
        &self,
        flow_id: &str,
        presented: Option<[u8; 32]>,
    ) -> Result<(Option<String>, bool), FlowError> {
        let mut flows = self.flows.lock();
        let entry = self.live(&mut flows, flow_id)?;
        match (entry.browser, presented) {
            (Some(bound), Some(p)) if bool::from(bound.ct_eq(&p)) => {
                Ok((entry.flow.issuer.clone(), entry.flow.iss_required))
            }
            _ => Err(FlowError::WrongBrowser),
        }
    }

    pub(super) fn consume(&self, flow_id: &str) -> Result<Flow, FlowError> {
        let mut flows = self.flows.lock();
        self.live(&mut flows, flow_id)?;
        flows
            .remove(flow_id)
            .map(|e| e.flow)
            .ok_or(FlowError::Unknown)
    }

    pub(super) fn connector_of(&self, flow_id: &str) -> Option<String> {
        self.flows
            .lock()
            .get(flow_id)
            .map(|e| e.flow.connector_name.clone())
    }

    pub(super) fn is_live(&self, flow_id: &str) -> bool {
        self.flows
            .lock()
            .get(flow_id)
            .is_some_and(|e| e.created.elapsed() < self.ttl)
    }

    pub(super) fn cancel_connector(&self, connector_id: &str) {
        self.flows
            .lock()
            .retain(|_, e| e.flow.connector_id != connector_id);
    }

    pub(super) fn len(&self) -> usize {
        self.flows.lock().len()
    }
}
