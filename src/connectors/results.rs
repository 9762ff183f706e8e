//! Outcomes of finished consent flows, kept briefly so the callback can redirect the browser to
//! a clean URL (`/connect/result/<id>`, S6) that shows them, and the console can poll them.
//!
//! Always in this process's memory; with replicas ([`ResultStore::postgres`]) also in the
//! database (`consent_results`, migration 3), because the browser's next request — the result
//! page — may reach another replica than the one that handled the callback. The database copy
//! is best effort: if it cannot be written, the page is still served by this replica. An
//! outcome holds no secret (the account name and scopes are in the `connector.authorized` event
//! too; a failure's reason is scrubbed peer text).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use parking_lot::Mutex;

use super::pages::Outcome;
use crate::store::postgres::{PgDatabase, pg_error};

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
    /// The shared copy, with replicas.
    shared: Option<Arc<PgDatabase>>,
}

impl ResultStore {
    /// Results kept in memory and in `db`, so any replica serves the page.
    pub fn postgres(db: Arc<PgDatabase>) -> Self {
        Self {
            results: Mutex::default(),
            shared: Some(db),
        }
    }

    /// Stores an outcome; returns the id of its page.
    pub async fn put(&self, outcome: Outcome) -> String {
        let id = self.put_local(outcome.clone());
        if let Some(db) = &self.shared
            && let Err(e) = shared_put(db, &id, &outcome).await
        {
            tracing::warn!(error = %e, "a consent result could not be shared with the other replicas");
        }
        id
    }

    /// The outcome of page `id`, from this replica's memory or the database.
    pub async fn get(&self, id: &str) -> Option<Outcome> {
        if let Some(o) = self.get_local(id) {
            return Some(o);
        }
        let db = self.shared.as_ref()?;
        match shared_get(db, id).await {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!(error = %e, "a shared consent result could not be read");
                None
            }
        }
    }

    fn put_local(&self, outcome: Outcome) -> String {
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

    fn get_local(&self, id: &str) -> Option<Outcome> {
        let results = self.results.lock();
        results
            .by_id
            .get(id)
            .filter(|(t, _)| t.elapsed() < RESULT_TTL)
            .map(|(_, o)| o.clone())
    }
}

fn table(db: &PgDatabase) -> String {
    format!("{}.consent_results", db.quoted_schema())
}

/// Inserts the outcome; purges expired rows and caps the table in the same statement.
async fn shared_put(
    db: &Arc<PgDatabase>,
    id: &str,
    outcome: &Outcome,
) -> Result<(), crate::store::StoreError> {
    let t = table(db);
    let sql = format!(
        "WITH purged AS (DELETE FROM {t} WHERE expires_at <= now()), \
         capped AS (DELETE FROM {t} WHERE id IN (\
           SELECT id FROM {t} WHERE expires_at > now() ORDER BY expires_at \
           LIMIT greatest(0, (SELECT count(*) FROM {t} WHERE expires_at > now()) - $4::bigint + 1))) \
         INSERT INTO {t} (id, expires_at, outcome) \
         VALUES ($1, now() + make_interval(secs => $2::float8), $3)"
    );
    let value = serde_json::to_value(outcome)
        .map_err(|e| crate::store::StoreError::Backend(format!("encoding a result: {e}")))?;
    let (id, secs) = (id.to_string(), RESULT_TTL.as_secs_f64());
    let cap = i64::try_from(MAX_RESULTS).unwrap_or(i64::MAX);
    let pool = db.pool();
    db.run(async move {
        let c = PgDatabase::pooled(&pool).await?;
        let st = c
            .prepare_cached(&sql)
            .await
            .map_err(pg_error("preparing a consent result insert"))?;
        c.execute(&st, &[&id, &secs, &value, &cap])
            .await
            .map_err(pg_error("inserting a consent result"))?;
        Ok(())
    })
    .await
}

async fn shared_get(
    db: &Arc<PgDatabase>,
    id: &str,
) -> Result<Option<Outcome>, crate::store::StoreError> {
    let sql = format!(
        "SELECT outcome FROM {} WHERE id = $1 AND expires_at > now()",
        table(db)
    );
    let (id, pool) = (id.to_string(), db.pool());
    let value: Option<serde_json::Value> = db
        .run(async move {
            let c = PgDatabase::pooled(&pool).await?;
            let st = c
                .prepare_cached(&sql)
                .await
                .map_err(pg_error("preparing a consent result read"))?;
            c.query_opt(&st, &[&id])
                .await
                .and_then(|row| row.map(|r| r.try_get(0)).transpose())
                .map_err(pg_error("reading a consent result"))
        })
        .await?;
    value
        .map(serde_json::from_value)
        .transpose()
        .map_err(|e| crate::store::StoreError::Backend(format!("decoding a result: {e}")))
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
        let genuine = store.put_local(Outcome::Authorized {
            connector: "notion".into(),
            account: None,
            scopes: vec![],
        });
        let first_flood = store.put_local(failed(0));
        for n in 1..MAX_RESULTS - 1 {
            store.put_local(failed(n));
        }
        assert_eq!(store.len(), MAX_RESULTS);
        assert!(
            store.get_local(&genuine).is_some(),
            "nothing evicted below the cap"
        );
        // One more: only the oldest goes (today's store wiped every result at this point).
        let newest = store.put_local(failed(MAX_RESULTS));
        assert_eq!(store.len(), MAX_RESULTS);
        assert!(
            store.get_local(&genuine).is_none(),
            "the oldest was evicted"
        );
        assert!(
            store.get_local(&first_flood).is_some(),
            "the second oldest is kept"
        );
        assert!(store.get_local(&newest).is_some());
    }
}
