//! Outcomes of finished consent flows, kept briefly so the callback can redirect the browser to
//! a clean URL (`/connect/result/<id>`, S6) that shows them, and the console can poll them.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use parking_lot::Mutex;

use super::pages::Outcome;

/// How long a result page stays available.
pub const RESULT_TTL: Duration = Duration::from_secs(600);
/// Most results kept: past it the oldest goes. Callbacks are unauthenticated, so a flood of
/// them must neither grow memory nor wipe the page of a genuine consent that just finished.
pub const MAX_RESULTS: usize = 10_000;

#[derive(Default)]
struct Results {
    by_id: HashMap<String, (Instant, Outcome)>,
    /// Ids in insertion order (so also in time order): the oldest is at the front.
    order: VecDeque<String>,
}

#[derive(Default)]
pub struct ResultStore {
    results: Mutex<Results>,
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
        let Results { by_id, order } = &mut *results;
        // Expired ones first (they are the oldest), then the oldest live ones past the cap.
        while let Some(oldest) = order.front() {
            let expired = by_id
                .get(oldest)
                .is_none_or(|(t, _)| now.duration_since(*t) >= RESULT_TTL);
            if !expired && order.len() < MAX_RESULTS {
                break;
            }
            if let Some(gone) = order.pop_front() {
                by_id.remove(&gone);
            }
        }
        by_id.insert(id.clone(), (now, outcome));
        order.push_back(id.clone());
        id
    }

    /// How many results are kept.
    pub fn len(&self) -> usize {
        self.results.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn get(&self, id: &str) -> Option<Outcome> {
        let results = self.results.lock();
        results
            .by_id
            .get(id)
            .filter(|(t, _)| t.elapsed() < RESULT_TTL)
            .map(|(_, o)| o.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed(n: usize) -> Outcome {
        Outcome::Failed {
            connector: None,
            reason: format!("refusal {n}"),
        }
    }

    #[test]
    fn a_full_store_evicts_the_oldest_and_keeps_the_rest() {
        let store = ResultStore::default();
        let genuine = store.put(Outcome::Authorized {
            connector: "notion".into(),
            account: None,
            scopes: vec![],
        });
        let first_flood = store.put(failed(0));
        for n in 1..MAX_RESULTS - 1 {
            store.put(failed(n));
        }
        assert_eq!(store.len(), MAX_RESULTS);
        assert!(
            store.get(&genuine).is_some(),
            "nothing evicted below the cap"
        );
        // One more: only the oldest goes (today's store wiped every result at this point).
        let newest = store.put(failed(MAX_RESULTS));
        assert_eq!(store.len(), MAX_RESULTS);
        assert!(store.get(&genuine).is_none(), "the oldest was evicted");
        assert!(
            store.get(&first_flood).is_some(),
            "the second oldest is kept"
        );
        assert!(store.get(&newest).is_some());
    }
}
