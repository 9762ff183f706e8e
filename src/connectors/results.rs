//! Outcomes of finished consent flows, kept briefly so the callback can redirect the browser to
//! a clean URL (`/connect/result/<id>`, S6) that shows them, and the console can poll them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use parking_lot::Mutex;

use super::pages::Outcome;

/// How long a result page stays available.
pub const RESULT_TTL: Duration = Duration::from_secs(600);
const MAX_RESULTS: usize = 10_000;

#[derive(Default)]
pub struct ResultStore {
    results: Mutex<HashMap<String, (Instant, Outcome)>>,
}

impl ResultStore {
    /// Stores an outcome; returns the id of its page.
    pub fn put(&self, outcome: Outcome) -> String {
        let mut id = [0u8; 16];
        if getrandom::fill(&mut id).is_err() {
            panic!("the operating system's random source failed");
        }
        let id = B64.encode(id);
        let mut results = self.results.lock();
        let now = Instant::now();
        results.retain(|_, (t, _)| now.duration_since(*t) < RESULT_TTL);
        if results.len() >= MAX_RESULTS {
            results.clear();
        }
        results.insert(id.clone(), (now, outcome));
        id
    }

    pub fn get(&self, id: &str) -> Option<Outcome> {
        let results = self.results.lock();
        results
            .get(id)
            .filter(|(t, _)| t.elapsed() < RESULT_TTL)
            .map(|(_, o)| o.clone())
    }
}
