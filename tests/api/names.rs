//! Names claimed in the log (issue 18): a name another replica claimed — which this replica's
//! projections know nothing of yet — is refused with the usual 409 and message, for profiles,
//! agents, connectors and servers, before any request leaves AGP; a create claims its name.

use agp::domain::ResourceName;
use agp::domain::security::NameKind;
use agp::store::aggregate_store::CommandMeta;
use agp::store::name_claims::NameClaims;
use serde_json::json;

use crate::helpers::{error_message, spawn_app};

fn name(s: &str) -> ResourceName {
    ResourceName::parse(s).expect("name")
}

#[tokio::test]
async fn a_name_claimed_by_another_replica_is_refused_with_the_usual_409() {
    let app = spawn_app().await;
    let (s, b) = app
        .post("/profiles", json!({"name": "ops", "description": "d"}))
        .await;
    assert_eq!(s, 201, "{b}");
    // Another replica's claims, appended to the shared log: this replica's projections have
    // no such profile, agent or connector.
    let claims = NameClaims::new(app.state.log.clone());
    let meta = CommandMeta::system();
    for (kind, n) in [
        (NameKind::Profile, "taken"),
        (NameKind::Agent, "taken"),
        (NameKind::Connector, "taken"),
    ] {
        claims
            .claim(
                kind,
                &name(n),
                "0194f0a2-0000-7000-8000-000000000001",
                &meta,
            )
            .await
            .expect("claim");
    }

    let (s, b) = app
        .post("/profiles", json!({"name": "taken", "description": "d"}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(
        error_message(&b, "conflict"),
        "profile \"taken\" already exists"
    );

    let (s, b) = app
        .post("/agents", json!({"name": "taken", "profile": "ops"}))
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(
        error_message(&b, "conflict"),
        "agent \"taken\" already exists"
    );

    // Refused before discovery or a probe: these URLs lead nowhere.
    let (s, b) = app
        .post(
            "/connectors",
            json!({"name": "taken", "mcp_server_url": "https://127.0.0.1:1/mcp", "registration": "dcr"}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(
        error_message(&b, "conflict"),
        "connector \"taken\" already exists"
    );
    let (s, b) = app
        .post(
            "/servers",
            json!({"name": "taken", "mcp_server_url": "https://127.0.0.1:1/mcp"}),
        )
        .await;
    assert_eq!(s, 409, "{b}");
    assert_eq!(
        error_message(&b, "conflict"),
        "a connector or server named \"taken\" already exists"
    );

    // Creates claim their names: "ops" is held, so another replica cannot take it.
    assert!(matches!(
        claims
            .claim(NameKind::Profile, &name("ops"), "someone-else", &meta)
            .await,
        Err(agp::store::name_claims::ClaimError::Taken)
    ));
    let (s, b) = app
        .post("/agents", json!({"name": "bot", "profile": "ops"}))
        .await;
    assert_eq!(s, 201, "{b}");
    let stream = app
        .state
        .log
        .read_stream("name/agent/bot", 1)
        .expect("read");
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].event_type, "name.claimed");
    assert_eq!(stream[0].data["id"], b["agent_id"], "{b}");
}

/// A connector add that fails after its claim (discovery cannot reach the server) releases
/// the name: a later add of the same name is not refused as taken.
#[tokio::test]
async fn a_failed_add_releases_its_claim() {
    let app = spawn_app().await;
    let body = json!({"name": "flaky", "mcp_server_url": "https://127.0.0.1:1/mcp", "registration": "dcr"});
    let (s, b) = app.post("/connectors", body.clone()).await;
    assert_ne!(s, 409, "{b}");
    assert!(s >= 400, "{b}");
    let types: Vec<String> = app
        .state
        .log
        .read_stream("name/connector/flaky", 1)
        .expect("read")
        .into_iter()
        .map(|r| r.event_type)
        .collect();
    assert_eq!(types, ["name.claimed", "name.released"]);
    let (s, b) = app.post("/connectors", body).await;
    assert_ne!(s, 409, "the name is free again: {b}");
}
