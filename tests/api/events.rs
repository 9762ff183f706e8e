use serde_json::{Value, json};

use crate::helpers::spawn_app;

async fn seed(app: &crate::helpers::TestApp) {
    app.post("/profiles", json!({"name": "p1"})).await;
    app.post("/profiles", json!({"name": "p2"})).await;
    app.post("/profiles/p1/suspend", json!({"reason": "audit me"}))
        .await;
    app.post("/agents", json!({"name": "a1", "profile": "p1"}))
        .await;
}

#[tokio::test]
async fn events_page_and_export_are_the_hash_chained_log() {
    let app = spawn_app().await;
    seed(&app).await;
    let (s, events) = app.get("/events").await;
    assert_eq!(s, 200);
    let events = events.as_array().unwrap();
    assert_eq!(events.len(), 4);
    let mut prev = "0".repeat(64);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"], i as u64 + 1);
        assert_eq!(e["prev_hash"], prev.as_str());
        let t = e["type"].as_str().unwrap();
        assert_eq!(
            e["schema_version"],
            agp::domain::upcast::current_version(t),
            "{t}"
        );
        assert!(e["actor"].as_str().unwrap().starts_with("admin:"));
        prev = e["hash"].as_str().unwrap().to_string();
    }
    assert_eq!(events[2]["type"], "profile.suspended");
    assert_eq!(events[2]["data"]["reason"], "audit me");

    let (_, page) = app.get("/events?from=3&limit=1").await;
    assert_eq!(page.as_array().unwrap().len(), 1);
    assert_eq!(page[0]["seq"], 3);

    let r = app
        .http
        .get(app.url("/api/v1/events/export?from=2"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = r.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0], events[1]);
}

#[tokio::test]
async fn audit_queries_filter_by_actor_type_subject_and_range() {
    let app = spawn_app().await;
    seed(&app).await;
    let (_, all) = app.get("/audit").await;
    let all = all.as_array().unwrap().clone();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0]["seq"], 4, "newest first");
    let actor = all[0]["actor"].as_str().unwrap().to_string();

    let (_, by_type) = app.get("/audit?type=profile.&order=asc").await;
    let types: Vec<&str> = by_type
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["profile.created", "profile.created", "profile.suspended"]
    );

    let (_, by_subject) = app.get("/audit?subject=profile:p1").await;
    assert_eq!(by_subject.as_array().unwrap().len(), 2);
    let (_, by_agent) = app.get("/audit?subject=agent:a1").await;
    assert_eq!(by_agent[0]["type"], "agent.created");

    let (_, by_actor) = app.get(&format!("/audit?actor={actor}&limit=2")).await;
    assert_eq!(by_actor.as_array().unwrap().len(), 2);
    let (_, none) = app.get("/audit?actor=agent:nobody").await;
    assert_eq!(none.as_array().unwrap().len(), 0);
    let (_, range) = app.get("/audit?from=2&to=3&order=asc").await;
    let seqs: Vec<u64> = range
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [2, 3]);
}

#[tokio::test]
async fn replay_rebuilds_every_projection_and_matches_live() {
    let app = spawn_app().await;
    seed(&app).await;
    let (s, report) = app.post("/audit/replay", json!({})).await;
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["consistent"], true, "{report}");
    assert_eq!(report["checkpoint"], 4);
    let names: Vec<&str> = report["projections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["connectors", "catalog", "grants", "audit", "approvals"]
    );
}

#[tokio::test]
async fn tail_streams_existing_entries_and_follows_new_ones() {
    let app = spawn_app().await;
    seed(&app).await;
    let r = app
        .http
        .get(app.url("/api/v1/audit/tail?from=1"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    let body = r.text().await.unwrap();
    assert_eq!(body.lines().count(), 4);

    let mut r = app
        .http
        .get(app.url("/api/v1/audit/tail?from=5&follow=true"))
        .bearer_auth(&app.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    app.post("/profiles", json!({"name": "late"})).await;
    let chunk = tokio::time::timeout(std::time::Duration::from_secs(5), r.chunk())
        .await
        .expect("followed entry arrives")
        .unwrap()
        .unwrap();
    let line: Value = serde_json::from_slice(chunk.split(|b| *b == b'\n').next().unwrap()).unwrap();
    assert_eq!(line["seq"], 5);
    assert_eq!(line["subject"], "profile:late");
    // Shutdown ends the follow stream instead of hanging.
    drop(r);
    app.stop().await;
}
