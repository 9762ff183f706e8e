//! Consent flows in PostgreSQL (`FlowStore::postgres`): two stores on one database are two
//! replicas. A consent started on one completes on the other; a flow is used once across
//! both; expiry, browser binding and console-session ownership hold; a forged state causes no
//! query; the PKCE verifier is in the table only sealed, and no error carries a secret.

use std::sync::Arc;
use std::time::Duration;

use agp::connectors::flows::{Flow, FlowError, FlowKeys, FlowStore};
use agp::store::postgres::{PgDatabase, PgOptions};
use agp::vault::MasterKey;
use secrecy::{ExposeSecret, SecretString};

use crate::pg_server::TempPostgres;

const VERIFIER: &str = "pkce-verifier-canary-6f1d0c2b9a7e4d3c8b5a1f0e2d4c6b8a9f7e5d3c1b0a";
const MASTER: [u8; 32] = [0x42; 32];

fn flow(connector_id: &str) -> Flow {
    Flow {
        connector_id: connector_id.into(),
        connector_name: "notion".into(),
        generation: 3,
        pkce_verifier: SecretString::from(VERIFIER),
        issuer: Some("https://as.example.com".into()),
        iss_required: true,
        authorize_url: "https://as.example.com/authorize?state=s".into(),
        token_endpoint: "https://as.example.com/token".into(),
        userinfo_endpoint: Some("https://as.example.com/userinfo".into()),
        redirect_uri: "https://agp.example.com/connect/callback".into(),
        resource: Some("https://mcp.example.com/mcp".into()),
        audience: None,
        scopes: vec!["read".into(), "write".into()],
    }
}

struct Cluster {
    pg: TempPostgres,
    url: String,
}

impl Cluster {
    fn start() -> Self {
        let pg = TempPostgres::start().expect("start PostgreSQL");
        let url = pg.create_database("agp_test").expect("create database");
        Self { pg, url }
    }

    /// A replica's handle on the database (its own runtime and pool).
    async fn database(&self) -> Arc<PgDatabase> {
        PgDatabase::open(&PgOptions::new(&self.url))
            .await
            .expect("open the database")
    }

    /// A replica's flow store: its own database handle, keys from the shared master key.
    async fn replica(&self, ttl: Duration) -> FlowStore {
        let keys = FlowKeys::from_master(&MasterKey::from_bytes(MASTER));
        FlowStore::postgres_with_ttl(self.database().await, keys, ttl)
    }

    fn sql(&self, sql: &str) -> String {
        self.pg.psql("agp_test", sql).expect("psql")
    }
}

const TTL: Duration = Duration::from_secs(600);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_started_on_one_replica_completes_on_another() {
    let cluster = Cluster::start();
    let a = cluster.replica(TTL).await;
    let b = cluster.replica(TTL).await;

    let (id, state) = a.create(flow("c1")).await.expect("create on A");
    assert_eq!(
        b.verify_state(&state),
        Ok(id.clone()),
        "B verifies A's state"
    );
    assert_eq!(b.connector_of(&id).await.as_deref(), Some("notion"));
    let (cookie, provider) = b.bind_browser(&id, None).await.expect("bind on B");
    assert_eq!(provider, "https://as.example.com/authorize?state=s");
    assert_eq!(
        a.bind_browser(&id, None).await,
        Err(FlowError::AlreadyBound),
        "a second browser, on the other replica"
    );
    assert_eq!(
        a.check(&id, Some(&cookie)).await,
        Ok((Some("https://as.example.com".into()), true)),
        "the browser bound on B is recognised on A"
    );
    assert_eq!(a.is_live(&id).await, Ok(true));
    let got = a.consume(&id).await.expect("consume on A");
    assert_eq!(got.pkce_verifier.expose_secret(), VERIFIER);
    assert_eq!(
        (got.connector_id.as_str(), got.generation),
        ("c1", 3),
        "the record round-trips"
    );
    assert_eq!(got.scopes, ["read", "write"]);
    assert_eq!(got.resource.as_deref(), Some("https://mcp.example.com/mcp"));
    assert_eq!(
        b.consume(&id).await.err(),
        Some(FlowError::Unknown),
        "single use"
    );
    assert_eq!(b.is_live(&id).await, Ok(false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_consuming_at_once_get_the_flow_once() {
    let cluster = Cluster::start();
    let a = Arc::new(cluster.replica(TTL).await);
    let b = Arc::new(cluster.replica(TTL).await);
    for round in 0..20 {
        let (id, _) = a.create(flow("c1")).await.expect("create");
        let (ra, rb) = tokio::join!(
            {
                let (a, id) = (a.clone(), id.clone());
                tokio::spawn(async move { a.consume(&id).await.map(|_| ()) })
            },
            {
                let (b, id) = (b.clone(), id.clone());
                tokio::spawn(async move { b.consume(&id).await.map(|_| ()) })
            }
        );
        let results = [ra.expect("join"), rb.expect("join")];
        let won = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(won, 1, "round {round}: {results:?}");
        assert!(
            results.contains(&Err(FlowError::Unknown)),
            "round {round}: the loser is told the flow is used: {results:?}"
        );
    }
    assert_eq!(a.len().await, Ok(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_flows_are_refused_on_every_replica_and_purged() {
    let cluster = Cluster::start();
    let ttl = Duration::from_millis(300);
    let a = cluster.replica(ttl).await;
    let b = cluster.replica(ttl).await;
    let (bound, _) = a.create(flow("c1")).await.expect("create");
    let (cookie, _) = a.bind_browser(&bound, None).await.expect("bind");
    let (unbound, _) = a.create(flow("c1")).await.expect("create");
    let (consumed_late, _) = a.create(flow("c1")).await.expect("create");
    tokio::time::sleep(Duration::from_millis(600)).await;

    assert_eq!(b.is_live(&bound).await, Ok(false));
    assert_eq!(
        b.check(&bound, Some(&cookie)).await,
        Err(FlowError::Expired)
    );
    assert_eq!(
        b.check(&bound, Some(&cookie)).await,
        Err(FlowError::Unknown),
        "an expired flow is dropped once seen"
    );
    assert_eq!(
        b.bind_browser(&unbound, None).await,
        Err(FlowError::Expired)
    );
    assert_eq!(
        b.consume(&consumed_late).await.err(),
        Some(FlowError::Expired),
        "consume refuses an expired flow (and removes it)"
    );
    assert_eq!(
        b.consume(&consumed_late).await.err(),
        Some(FlowError::Unknown)
    );

    // Expired rows that nobody looked at are purged by the next insert, on any replica.
    let (stale, _) = a.create(flow("c1")).await.expect("create");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (fresh, _) = b.create(flow("c2")).await.expect("create");
    assert_eq!(b.connector_of(&stale).await, None, "purged");
    assert_eq!(b.len().await, Ok(1));
    assert_eq!(a.is_live(&fresh).await, Ok(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_browsers_and_sessions_are_refused_across_replicas() {
    let cluster = Cluster::start();
    let a = cluster.replica(TTL).await;
    let b = cluster.replica(TTL).await;

    let (id, _) = a.create(flow("c1")).await.expect("create");
    assert_eq!(
        b.check(&id, Some("no-browser-yet")).await,
        Err(FlowError::WrongBrowser),
        "unbound"
    );
    let (cookie, _) = a.bind_browser(&id, None).await.expect("bind");
    assert_eq!(
        b.check(&id, Some("another-browser")).await,
        Err(FlowError::WrongBrowser)
    );
    assert_eq!(b.check(&id, None).await, Err(FlowError::WrongBrowser));
    assert!(b.check(&id, Some(&cookie)).await.is_ok());

    // A console consent: restricted on A, opened on B.
    let (owned, _) = a.create(flow("c1")).await.expect("create");
    assert_eq!(a.restrict(&owned, [7; 32]).await, Ok(true));
    assert_eq!(
        b.bind_browser(&owned, None).await,
        Err(FlowError::WrongSession)
    );
    assert_eq!(
        b.bind_browser(&owned, Some([8; 32])).await,
        Err(FlowError::WrongSession)
    );
    assert!(b.bind_browser(&owned, Some([7; 32])).await.is_ok());
    assert_eq!(b.restrict("no-such-flow", [7; 32]).await, Ok(false));

    // Two browsers opening the link at once on both replicas: one is bound.
    let a = Arc::new(a);
    let b = Arc::new(b);
    for _ in 0..10 {
        let (id, _) = a.create(flow("c1")).await.expect("create");
        let (ra, rb) = tokio::join!(
            {
                let (a, id) = (a.clone(), id.clone());
                tokio::spawn(async move { a.bind_browser(&id, None).await.map(|_| ()) })
            },
            {
                let (b, id) = (b.clone(), id.clone());
                tokio::spawn(async move { b.bind_browser(&id, None).await.map(|_| ()) })
            }
        );
        let results = [ra.expect("join"), rb.expect("join")];
        assert_eq!(
            results.iter().filter(|r| r.is_ok()).count(),
            1,
            "{results:?}"
        );
        assert!(
            results.contains(&Err(FlowError::AlreadyBound)),
            "{results:?}"
        );
    }

    // Cancelling a connector on one replica drops its flows for all.
    let (gone, _) = a.create(flow("c9")).await.expect("create");
    b.cancel_connector("c9").await.expect("cancel");
    assert_eq!(a.bind_browser(&gone, None).await, Err(FlowError::Unknown));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_state_is_refused_before_any_query() {
    let cluster = Cluster::start();
    let a = cluster.replica(TTL).await;
    let (id, state) = a.create(flow("c1")).await.expect("create");
    let before = a.round_trips();

    // Signed by another master key: a replica of another deployment, or a guess.
    let stranger = FlowStore::postgres(
        cluster.database().await,
        FlowKeys::from_master(&MasterKey::from_bytes([0x43; 32])),
    );
    let (_, foreign) = stranger.reserve();
    let tampered = format!("{}x", &state[..state.len() - 1]);
    let other_id = state.replacen(&id, "AAAAAAAAAAAAAAAAAAAAAA", 1);
    for forged in [
        foreign.as_str(),
        &tampered,
        &other_id,
        "",
        "v1.a.b",
        "v2.x.y",
    ] {
        assert_eq!(
            a.verify_state(forged),
            Err(FlowError::BadState),
            "{forged:?}"
        );
    }
    assert_eq!(
        a.round_trips(),
        before,
        "no query for a state that does not verify"
    );
    assert_eq!(a.verify_state(&state), Ok(id));
    assert_eq!(a.round_trips(), before, "verifying never queries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_verifier_is_sealed_in_the_table_and_an_altered_row_fails_closed() {
    let cluster = Cluster::start();
    let a = cluster.replica(TTL).await;
    let (id, _) = a.create(flow("c1")).await.expect("create");
    let (other, _) = a.create(flow("c1")).await.expect("create");

    // Every column of every row, as text: the verifier is nowhere (nor its hex).
    let dump = cluster.sql(
        "SELECT id, connector_id, connector_name, expires_at, encode(sealed, 'escape'), \
         encode(sealed, 'hex') FROM agp.consent_flows",
    );
    assert!(dump.contains("notion"), "the dump has the rows: {dump}");
    assert!(!dump.contains(VERIFIER), "{dump}");
    assert!(!dump.contains(&hex::encode(VERIFIER)), "{dump}");
    assert!(
        !dump.contains("as.example.com/token"),
        "the record is sealed whole: {dump}"
    );

    // A sealed record moved to another flow's row does not open there.
    cluster.sql(&format!(
        "UPDATE agp.consent_flows SET sealed = (SELECT sealed FROM agp.consent_flows \
         WHERE id = '{other}') WHERE id = '{id}'"
    ));
    let moved = a.consume(&id).await.expect_err("refused");
    assert_eq!(moved, FlowError::Corrupt);
    // A flipped byte does not either; neither does a row moved to another connector.
    cluster.sql(&format!(
        "UPDATE agp.consent_flows SET connector_id = 'c2' WHERE id = '{other}'"
    ));
    assert_eq!(a.consume(&other).await.err(), Some(FlowError::Corrupt));
    let (third, _) = a.create(flow("c1")).await.expect("create");
    cluster.sql(&format!(
        "UPDATE agp.consent_flows SET sealed = set_byte(sealed, 40, get_byte(sealed, 40) # 1) \
         WHERE id = '{third}'"
    ));
    assert_eq!(
        a.bind_browser(&third, None).await.err(),
        Some(FlowError::Corrupt),
        "bind opens the record too"
    );
    for e in [moved, FlowError::Corrupt] {
        assert!(!e.to_string().contains(VERIFIER));
        assert!(!format!("{e:?}").contains(VERIFIER));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_table_is_named_without_a_secret() {
    let cluster = Cluster::start();
    let a = cluster.replica(TTL).await;
    let (id, state) = a.create(flow("c1")).await.expect("create");
    cluster.sql("ALTER TABLE agp.consent_flows RENAME TO consent_flows_gone");
    let insert = a.create(flow("c1")).await.expect_err("refused");
    let consume = a.consume(&id).await.expect_err("refused");
    let bind = a.bind_browser(&id, None).await.expect_err("refused");
    for e in [&insert, &consume, &bind] {
        assert!(matches!(e, FlowError::Unavailable(_)), "{e:?}");
        let shown = format!("{e} {e:?}");
        assert!(shown.contains("PostgreSQL"), "names the backend: {shown}");
        assert!(shown.contains("consent flow"), "names the step: {shown}");
        for secret in [VERIFIER, id.as_str(), state.as_str()] {
            assert!(!shown.contains(secret), "{shown}");
        }
    }
    assert!(a.is_live(&id).await.is_err());
}

/// `Flow`'s `Debug` never shows the verifier (it travels as a `SecretString`).
#[test]
fn a_flow_prints_without_its_verifier() {
    let printed = format!("{:?}", flow("c1"));
    assert!(!printed.contains(VERIFIER), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_table_is_capped_oldest_first() {
    let cluster = Cluster::start();
    let a = cluster.replica(TTL).await;
    let cap = agp::connectors::flows::MAX_FLOWS;
    // A full table of live flows (written directly: 10,000 creates would be slow), the
    // oldest expiring first.
    cluster.sql(&format!(
        "INSERT INTO agp.consent_flows (id, connector_id, connector_name, expires_at, sealed) \
         SELECT 'filler-' || i, 'c0', 'filler', now() + interval '5 minutes' + i * interval '1 ms', \
         '\\x00'::bytea FROM generate_series(1, {cap}) AS i"
    ));
    let (id, _) = a.create(flow("c1")).await.expect("create");
    assert_eq!(a.len().await, Ok(cap), "still at the cap");
    assert_eq!(a.is_live(&id).await, Ok(true), "the new flow is in");
    assert_eq!(
        cluster.sql("SELECT count(*) FROM agp.consent_flows WHERE id = 'filler-1'"),
        "0",
        "the oldest went"
    );
}

/// The page the callback made on one replica (`/connect/result/<id>`) is shown by another;
/// when the database cannot take it, the replica that made it still shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consent_result_page_is_served_by_every_replica() {
    use agp::connectors::pages::Outcome;
    use agp::connectors::results::ResultStore;
    let cluster = Cluster::start();
    let a = ResultStore::postgres(cluster.database().await);
    let b = ResultStore::postgres(cluster.database().await);
    let authorized = Outcome::Authorized {
        connector: "notion".into(),
        account: Some("ada@example.com".into()),
        scopes: vec!["read".into()],
    };
    let id = a.put(authorized.clone()).await;
    assert_eq!(b.get(&id).await, Some(authorized));
    let failed = Outcome::Failed {
        connector: None,
        reason: "access_denied: <b>no</b>".into(),
    };
    let id = b.put(failed.clone()).await;
    assert_eq!(a.get(&id).await, Some(failed));
    assert_eq!(a.get("no-such-result").await, None);

    cluster.sql("ALTER TABLE agp.consent_results RENAME TO consent_results_gone");
    let local = Outcome::Failed {
        connector: Some("notion".into()),
        reason: "r".into(),
    };
    let id = a.put(local.clone()).await;
    assert_eq!(
        a.get(&id).await,
        Some(local),
        "served from this replica's memory"
    );
    assert_eq!(b.get(&id).await, None);
}
