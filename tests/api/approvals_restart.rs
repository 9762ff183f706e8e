//! A pending approval survives a kill -9 of `agp serve` still pending, with the held arguments
//! still shown to approvers; approved after the restart, the agent's identical retry (a new
//! session: the old one died with the process) goes through once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

use crate::peers::{Agent, Provider, browser, consent};

/// `agp serve` as a child process on `data`; killed (SIGKILL) when dropped.
struct Server {
    child: Child,
    base: String,
    token: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    fn start(data: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_agp"))
            .args([
                "serve",
                "--log-format",
                "json",
                "--listen",
                "127.0.0.1:0",
                "--egress-allow",
                "127.0.0.1/32",
                "--approval-wait",
                "1",
            ])
            .env("AGP_DATA_DIR", data)
            .env_remove("AGP_LOG")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let port = loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("server logs");
            let v: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
            if v["message"] == "AGP is ready" {
                break v["port"].as_u64().unwrap();
            }
        };
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token: token.trim().to_string(),
        }
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut r = reqwest::Client::new()
            .request(method, format!("{}/api/v1{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_approval_survives_a_kill_9_still_pending() {
    let provider = Provider::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let (s, added) = server
        .post(
            "/connectors",
            json!({"name": "notion", "mcp_server_url": provider.mcp_url()}),
        )
        .await;
    assert_eq!(s, 201, "{added}");
    let r = consent(
        &browser(),
        added["authorize_url"].as_str().unwrap(),
        "alice",
        true,
    )
    .await;
    assert_eq!(r["outcome"], "authorized", "{r}");
    let (s, b) = server
        .post(
            "/connectors/notion/register-tools",
            json!({"tools": [{"name": "create_page"}]}),
        )
        .await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(
        server.post("/profiles", json!({"name": "ops"})).await.0,
        201
    );
    let (s, b) = server
        .post(
            "/profiles/ops/grants",
            json!({"tools": ["notion__create_page"], "reason": "r"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, a) = server
        .post("/agents", json!({"name": "bot", "profile": "ops"}))
        .await;
    assert_eq!(s, 201, "{a}");
    let key = a["key"].as_str().unwrap().to_string();

    let (url, k) = (format!("{}/mcp", server.base), key.clone());
    let e = tokio::task::spawn_blocking(move || {
        let mut agent = Agent::connect(&url, Some(&k), &[]).expect("connects");
        agent
            .call("notion__create_page", json!({"title": "survives"}))
            .expect_err("pending")
    })
    .await
    .unwrap();
    assert_eq!(e["code"], -32012, "{e}");
    let id = e["data"]["approval_id"].as_str().unwrap().to_string();

    // kill -9, then start again on the same data directory.
    drop(server);
    let server = Server::start(dir.path());
    let (s, shown) = server.get(&format!("/approvals/{id}")).await;
    assert_eq!(s, 200, "{shown}");
    assert_eq!(shown["status"], "pending", "{shown}");
    assert_eq!(
        shown["arguments"],
        json!({"title": "survives"}),
        "still sealed"
    );

    let (s, b) = server
        .post(
            &format!("/approvals/{id}/approve"),
            json!({"reason": "after the crash"}),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let url = format!("{}/mcp", server.base);
    let (first, second) = tokio::task::spawn_blocking(move || {
        let mut agent = Agent::connect(&url, Some(&key), &[]).expect("reconnects");
        let args = json!({"title": "survives"});
        (
            agent.call("notion__create_page", args.clone()),
            agent.call("notion__create_page", args),
        )
    })
    .await
    .unwrap();
    let first = first.expect("the retry goes through");
    assert!(
        first["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("survives")
    );
    assert_eq!(second.expect_err("only once")["code"], -32012);
    let (_, verify) = server.get("/audit/verify").await;
    assert_eq!(verify["valid"], true, "{verify}");
}
