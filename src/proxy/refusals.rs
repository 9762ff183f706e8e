//! What the proxy does when upstream refuses a connector's access token (HTTP 401).
//!
//! A refusal usually means the provider revoked the token: one forced refresh and one retry
//! fix it. But an upstream that refuses every token would turn each call into a token request
//! at the provider. So, per connector:
//!
//! - at most one forced refresh per [`Refusals::window`]; other refusals inside it go back to the
//!   agent as they are;
//! - a refused token that a forced refresh had just obtained (within [`CHAIN_SPAN`] of it)
//!   continues a chain; after [`CHAIN_LIMIT`] forced refreshes in a row whose fresh token was
//!   refused too, refreshing is pointless: the connector needs a person (`reauth_required`).
//!
//! A token that worked for longer than [`CHAIN_SPAN`] and is then refused starts a new chain.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Forced refreshes in a row whose fresh token upstream refused, before giving up.
pub const CHAIN_LIMIT: u32 = 3;
/// How long after a forced refresh a refusal of its token counts as "refused at once".
pub const CHAIN_SPAN: Duration = Duration::from_secs(300);

/// The last forced refresh of one connector.
#[derive(Debug, Clone)]
struct Forced {
    at: Instant,
    /// Fingerprint of the access token it obtained.
    fresh: String,
    /// Forced refreshes in a row whose fresh token was refused, this one included.
    chain: u32,
}

/// What to do about a refused token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Force a refresh; it is the `chain`-th in a row.
    Refresh { chain: u32 },
    /// A refresh was forced moments ago: pass the refusal on without asking the provider.
    PassOn,
    /// Upstream keeps refusing fresh tokens: the connector needs reauthorization.
    Reauthorize,
}

/// Forced refreshes by connector id.
#[derive(Debug)]
pub struct Refusals {
    window: Duration,
    last: parking_lot::Mutex<HashMap<String, Forced>>,
}

impl Refusals {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            last: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Upstream refused `connector_id`'s current token, whose fingerprint is `refused`.
    pub fn decide(&self, connector_id: &str, refused: &str, now: Instant) -> Decision {
        let last = self.last.lock();
        let Some(f) = last.get(connector_id) else {
            return Decision::Refresh { chain: 1 };
        };
        let since = now.saturating_duration_since(f.at);
        let fresh_refused = f.fresh == refused && since < CHAIN_SPAN;
        if fresh_refused && f.chain >= CHAIN_LIMIT {
            return Decision::Reauthorize;
        }
        if since < self.window {
            return Decision::PassOn;
        }
        if fresh_refused {
            Decision::Refresh { chain: f.chain + 1 }
        } else {
            Decision::Refresh { chain: 1 }
        }
    }

    /// A forced refresh (the `chain`-th in a row) obtained the token with fingerprint `fresh`.
    pub fn refreshed(&self, connector_id: &str, fresh: &str, chain: u32, now: Instant) {
        self.last.lock().insert(
            connector_id.to_string(),
            Forced {
                at: now,
                fresh: fresh.to_string(),
                chain,
            },
        );
    }

    /// The connector was reauthorized, reconnected or removed: its chain is over.
    pub fn forget(&self, connector_id: &str) {
        self.last.lock().remove(connector_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: Duration = Duration::from_secs(30);

    #[test]
    fn the_first_refusal_forces_a_refresh() {
        let r = Refusals::new(W);
        assert_eq!(
            r.decide("c", "t0", Instant::now()),
            Decision::Refresh { chain: 1 }
        );
    }

    #[test]
    fn refusals_inside_the_window_ask_the_provider_nothing() {
        let r = Refusals::new(W);
        let t = Instant::now();
        r.refreshed("c", "t1", 1, t);
        for s in [1, 10, 29] {
            let at = t + Duration::from_secs(s);
            assert_eq!(r.decide("c", "t1", at), Decision::PassOn, "{s}");
            assert_eq!(r.decide("c", "t0", at), Decision::PassOn, "{s}");
        }
        assert_eq!(
            r.decide("other", "x", t + Duration::from_secs(1)),
            Decision::Refresh { chain: 1 },
            "per connector"
        );
    }

    #[test]
    fn fresh_tokens_refused_again_and_again_end_in_reauthorization() {
        let r = Refusals::new(W);
        let mut t = Instant::now();
        let mut chain = 0;
        for fresh in ["t1", "t2", "t3"] {
            let prev = if chain == 0 {
                "t0".to_string()
            } else {
                format!("t{chain}")
            };
            match r.decide("c", &prev, t) {
                Decision::Refresh { chain: n } => chain = n,
                other => panic!("{other:?} at {fresh}"),
            }
            r.refreshed("c", fresh, chain, t);
            t += W;
        }
        assert_eq!(chain, CHAIN_LIMIT);
        assert_eq!(r.decide("c", "t3", t), Decision::Reauthorize);
        // Even inside the window: there is nothing left to try.
        assert_eq!(
            r.decide("c", "t3", t - W + Duration::from_secs(1)),
            Decision::Reauthorize
        );
    }

    #[test]
    fn a_token_that_worked_for_a_while_starts_a_new_chain() {
        let r = Refusals::new(W);
        let t = Instant::now();
        r.refreshed("c", "t3", CHAIN_LIMIT, t);
        assert_eq!(
            r.decide("c", "t3", t + CHAIN_SPAN),
            Decision::Refresh { chain: 1 }
        );
        r.forget("c");
        assert_eq!(
            r.decide("c", "t3", t + Duration::from_secs(1)),
            Decision::Refresh { chain: 1 }
        );
    }

    #[test]
    fn a_refusal_of_a_token_other_than_the_fresh_one_after_the_window_restarts_the_chain() {
        let r = Refusals::new(W);
        let t = Instant::now();
        r.refreshed("c", "t1", 2, t);
        assert_eq!(
            r.decide("c", "other", t + W),
            Decision::Refresh { chain: 1 }
        );
    }
}
