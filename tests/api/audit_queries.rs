//! Audit queries an auditor asks after real calls: by agent, profile, tool and connector, in a
//! time window, a page at a time — over REST and through `agp audit list`.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::cli::{agp, cli, json_out};
use crate::helpers::{TestApp, error_message, spawn_app};
use crate::peers::{Agent, Provider};
use crate::proxy_e2e::{agent_with, await_events, connect_and_register, mcp_url};

/// `agp audit list <args> --output json`: the entries, and the cursor it printed, if any.
async fn list(app: &TestApp, args: &[&str]) -> (Vec<Value>, Option<String>) {
    let mut all = vec!["audit", "list"];
    all.extend_from_slice(args);
    let out = cli(app, &all).await;
    let entries = json_out(&out).as_array().unwrap().clone();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let next = stderr
        .lines()
        .find_map(|l| l.strip_prefix("next: --cursor "))
        .map(str::to_string);
    (entries, next)
}

/// Every page of `agp audit list <args>`, following the printed cursors.
async fn all_pages(app: &TestApp, args: &[&str]) -> (Vec<u64>, usize) {
    let (mut seqs, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let mut a: Vec<&str> = args.to_vec();
        if let Some(c) = &cursor {
            a.extend(["--cursor", c.as_str()]);
        }
        let (entries, next) = list(app, &a).await;
        pages += 1;
        seqs.extend(entries.iter().map(|e| e["seq"].as_u64().unwrap()));
        match next {
            Some(n) => cursor = Some(n),
            None => return (seqs, pages),
        }
    }
}

/// How many entries of each type.
fn types(entries: &[Value]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for e in entries {
        *counts
            .entry(e["type"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    counts
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn auditors_find_what_concerns_an_agent_profile_tool_or_connector() {
    let provider = Provider::start(&[]);
    let app = spawn_app().await;
    connect_and_register(&app, &provider, "notion", &["echo", "search_pages"]).await;
    let claude = agent_with(
        &app,
        "support",
        "claude",
        &["notion__echo", "notion__search_pages"],
    )
    .await;
    let bot = agent_with(&app, "ops", "bot", &["notion__echo"]).await;
    let mut a = Agent::connect(&mcp_url(&app), Some(&claude), &[]).expect("connects");
    for i in 0..3 {
        a.call("notion__echo", json!({"text": format!("c{i}")}))
            .expect("echo");
    }
    a.call("notion__search_pages", json!({"query": "Run"}))
        .expect("search");
    let mut b = Agent::connect(&mcp_url(&app), Some(&bot), &[]).expect("connects");
    for i in 0..2 {
        b.call("notion__echo", json!({"text": format!("b{i}")}))
            .expect("echo");
    }
    b.call("notion__search_pages", json!({"query": "x"}))
        .expect_err("not granted");
    await_events(&app, "call.completed", 6).await;
    await_events(&app, "call.denied", 1).await;

    let all = ["--order", "asc", "--limit", "10000"];
    let with = |flag: &'static str, v: &'static str| {
        let mut args = all.to_vec();
        args.extend([flag, v]);
        args
    };
    // call.completed names only ids; it is found by name all the same.
    let (claude_trail, _) = list(&app, &with("--agent", "claude")).await;
    assert_eq!(
        types(&claude_trail),
        counts(&[
            ("agent.created", 1),
            ("call.started", 4),
            ("call.completed", 4)
        ])
    );
    let (ops, _) = list(&app, &with("--profile", "ops")).await;
    assert_eq!(
        types(&ops),
        counts(&[
            ("profile.created", 1),
            ("profile.tools_granted", 1),
            ("agent.created", 1),
            ("call.started", 2),
            ("call.completed", 2),
            ("call.denied", 1),
        ])
    );
    let (search, _) = list(&app, &with("--tool", "notion__search_pages")).await;
    assert_eq!(
        types(&search),
        counts(&[
            ("connector.tools_registered", 1),
            ("profile.tools_granted", 1),
            ("call.started", 1),
            ("call.completed", 1),
            ("call.denied", 1),
        ])
    );
    let (notion, _) = list(&app, &with("--connector", "notion")).await;
    let t = types(&notion);
    assert_eq!(notion[0]["type"], "connector.added", "{notion:?}");
    assert_eq!(
        (t["call.started"], t["call.completed"], t["call.denied"]),
        (6, 6, 1)
    );
    assert!(
        t.keys()
            .all(|k| k.starts_with("connector.") || k.starts_with("call.")),
        "{t:?}"
    );
    // Unknown names match nothing, like the other filters.
    for (flag, v) in [
        ("--agent", "nobody"),
        ("--profile", "nobody"),
        ("--tool", "notion__nope"),
        ("--connector", "nobody"),
        ("--approval", "nothing"),
    ] {
        assert_eq!(list(&app, &with(flag, v)).await, (vec![], None), "{flag}");
    }

    // Paging through the CLI, both orders: the pages add up to the one-page answer.
    let everything: Vec<u64> = claude_trail
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let (asc, pages) = all_pages(
        &app,
        &["--agent", "claude", "--order", "asc", "--limit", "4"],
    )
    .await;
    assert_eq!((asc, pages), (everything.clone(), 3));
    let (desc, pages) = all_pages(&app, &["--agent", "claude", "--limit", "2"]).await;
    let mut newest_first = everything.clone();
    newest_first.reverse();
    assert_eq!((desc, pages), (newest_first, 5));
    // Human output ends a page with the way to the next one.
    let mut c = agp(&[
        "--server", &app.base, "audit", "list", "--agent", "claude", "--limit", "3",
    ]);
    c.env("AGP_ADMIN_TOKEN", &app.token);
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.lines().last().unwrap().starts_with("next: --cursor "),
        "{text}"
    );
    let out = cli(&app, &["audit", "list", "--cursor", "not-a-cursor"]).await;
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cursor \"not-a-cursor\" is not one"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // A time window: inclusive since, exclusive until.
    let time = |i: usize| claude_trail[i]["time"].as_str().unwrap().to_string();
    let (s, window) = app
        .get(&format!(
            "/audit?agent=claude&order=asc&since={}&until={}",
            time(1),
            time(4)
        ))
        .await;
    assert_eq!(s, 200, "{window}");
    // Records appended in one group commit share a time: compare times, not positions.
    let at = |e: &Value| chrono::DateTime::parse_from_rfc3339(e["time"].as_str().unwrap()).unwrap();
    let (since, until) = (at(&claude_trail[1]), at(&claude_trail[4]));
    let expected: Vec<&Value> = claude_trail
        .iter()
        .filter(|e| since <= at(e) && at(e) < until)
        .collect();
    assert!(expected.contains(&&claude_trail[1]), "since is inclusive");
    assert!(!expected.contains(&&claude_trail[4]), "until is exclusive");
    assert_eq!(
        window.as_array().unwrap().iter().collect::<Vec<_>>(),
        expected
    );
    let (s, b) = app.get("/audit?since=yesterday").await;
    assert_eq!(s, 400);
    assert!(error_message(&b, "invalid_request").starts_with("since must be an RFC 3339"));
    let (s, b) = app.get("/audit?until=2025-01-31").await;
    assert_eq!(s, 400);
    assert!(error_message(&b, "invalid_request").starts_with("until must be an RFC 3339"));

    // REST: the cursor is a header; the body stays an array.
    let page = |query: String| {
        let app = &app;
        async move {
            let r = app
                .http
                .get(app.url(&format!("/api/v1/audit?{query}")))
                .bearer_auth(&app.token)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let next = r
                .headers()
                .get("x-next-cursor")
                .map(|v| v.to_str().unwrap().to_string());
            (r.json::<Value>().await.unwrap(), next)
        }
    };
    let (first, next) = page("agent=claude&order=asc&limit=8".into()).await;
    assert_eq!(first.as_array().unwrap().len(), 8);
    let (rest, last) = page(format!("agent=claude&limit=8&cursor={}", next.unwrap())).await;
    assert_eq!(rest.as_array().unwrap()[..], claude_trail[8..]);
    assert_eq!(last, None);
    let (s, b) = app.get("/audit?cursor=%21%21").await;
    assert_eq!(s, 400);
    assert!(error_message(&b, "invalid_request").contains("x-next-cursor"));
    let (_, asc_next) = page("order=asc&limit=1".into()).await;
    let (s, b) = app
        .get(&format!("/audit?order=desc&cursor={}", asc_next.unwrap()))
        .await;
    assert_eq!(s, 400);
    assert!(
        error_message(&b, "invalid_request").contains("order=asc"),
        "{b}"
    );
    let (s, b) = app.get("/audit?limit=0").await;
    assert_eq!(s, 400);
    assert!(error_message(&b, "invalid_request").starts_with("limit must be at least 1"));
    let (s, b) = app
        .get("/audit?since=2025-02-01T00:00:00Z&until=2025-01-01T00:00:00Z")
        .await;
    assert_eq!(s, 400);
    assert!(error_message(&b, "invalid_request").contains("is after until"));

    // The OpenAPI document names the new parameters and the header.
    let (_, doc) = app.http_json("/api/v1/openapi.json").await;
    let get = &doc["paths"]["/api/v1/audit"]["get"];
    let params: Vec<&str> = get["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for p in [
        "agent",
        "profile",
        "tool",
        "connector",
        "approval",
        "since",
        "until",
        "cursor",
    ] {
        assert!(params.contains(&p), "{p} not in {params:?}");
    }
    assert!(
        get["responses"]["200"]["headers"]["x-next-cursor"].is_object(),
        "{get}"
    );

    // What the projection keeps per entry survives a rebuild.
    let (s, replay) = app.post("/audit/replay", json!({})).await;
    assert_eq!(s, 200, "{replay}");
    assert_eq!(replay["consistent"], true, "{replay}");
}
