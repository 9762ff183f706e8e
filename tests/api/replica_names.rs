//! Two connector services on one PostgreSQL database — two replicas, each with its own log
//! handle, projections, flow store handle and vault — against the mock provider: adding one
//! connector name on both at once creates it once (one client registered at the provider; the
//! other replica answers the usual 409), and the consent link the winner printed opens on the
//! other replica (the flow is in the database).

use std::path::Path;
use std::sync::Arc;

use agp::connectors::flows::{FlowKeys, FlowStore};
use agp::connectors::service::add::ClientChoice;
use agp::connectors::service::{AddConnector, ConnectorService, ServiceError};
use agp::domain::ResourceName;
use agp::domain::connector::Overrides;
use agp::oauth::egress::{EgressClient, EgressPolicy, EgressTimeouts};
use agp::projections::LiveProjections;
use agp::store::EventLog;
use agp::store::aggregate_store::CommandMeta;
use agp::store::postgres::{PgDatabase, PgLog, PgOptions};
use agp::vault::{MasterKey, Vault};

use crate::mock_provider::Mock;
use crate::pg_server::TempPostgres;

const MASTER: [u8; 32] = [0x5a; 32];

/// One replica's connector service, wired as `agp serve` on PostgreSQL would be.
async fn replica(url: &str, dir: &Path) -> Arc<ConnectorService> {
    let db = PgDatabase::open(&PgOptions::new(url))
        .await
        .expect("open db");
    let log: Arc<dyn EventLog> = Arc::new(PgLog::open_on(db.clone()).await.expect("log").0);
    let projections = LiveProjections::start_with(log.clone(), None)
        .await
        .expect("projections");
    let vault = Vault::open(dir, MasterKey::from_bytes(MASTER)).expect("vault");
    let flows = FlowStore::postgres(db, FlowKeys::from_vault(&vault));
    let egress = EgressClient::new(
        EgressPolicy::parse(&["127.0.0.1/32"]).expect("policy"),
        EgressTimeouts::default(),
    )
    .expect("egress");
    Arc::new(
        ConnectorService::new(
            log,
            projections,
            Arc::new(vault),
            egress,
            "http://127.0.0.1:9",
        )
        .with_flows(flows),
    )
}

fn add(mock: &Mock) -> AddConnector {
    AddConnector {
        name: ResourceName::parse("notion").expect("name"),
        mcp_server_url: url::Url::parse(&mock.mcp_url()).expect("url"),
        client: ClientChoice::Dcr,
        client_name: None,
        scopes: None,
        overrides: Overrides::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_name_added_on_two_replicas_at_once_is_added_once_and_its_consent_opens_anywhere() {
    let pg = TempPostgres::start().expect("start PostgreSQL");
    let url = pg.create_database("agp_test").expect("create database");
    let dirs = (
        tempfile::tempdir().expect("dir"),
        tempfile::tempdir().expect("dir"),
    );
    let a = replica(&url, dirs.0.path()).await;
    let b = replica(&url, dirs.1.path()).await;
    let mock = Mock::start().await;

    let (ra, rb) = tokio::join!(
        tokio::spawn({
            let (a, req) = (a.clone(), add(&mock));
            async move { a.add(req, &CommandMeta::system()).await }
        }),
        tokio::spawn({
            let (b, req) = (b.clone(), add(&mock));
            async move { b.add(req, &CommandMeta::system()).await }
        })
    );
    let (ra, rb) = (ra.expect("join"), rb.expect("join"));
    let (consent, loser, refusal) = match (ra, rb) {
        (Ok(c), Err(e)) => (c, b.clone(), e),
        (Err(e), Ok(c)) => (c, a.clone(), e),
        other => panic!("expected one success and one conflict: {other:?}"),
    };
    match refusal {
        ServiceError::Conflict(msg) => assert_eq!(msg, "connector \"notion\" already exists"),
        other => panic!("not a 409: {other:?}"),
    }
    assert_eq!(
        mock.hits("register"),
        1,
        "one client registered at the provider"
    );

    // The consent link the winner printed opens on the other replica.
    let flow = consent
        .authorize_url
        .rsplit('/')
        .next()
        .expect("flow id")
        .to_string();
    let (_cookie, provider) = loser
        .flows
        .bind_browser(&flow, None)
        .await
        .expect("the flow is found on the other replica");
    assert!(provider.starts_with(&mock.base), "{provider}");
}
