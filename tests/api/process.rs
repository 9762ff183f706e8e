//! `agp serve` as a child process: for tests that kill it, restart it, or read what it logs.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// `agp serve` on `data` with JSON logs on stdout (every line kept); killed (SIGKILL) when
/// dropped.
pub struct Server {
    child: Child,
    pub base: String,
    pub token: String,
    /// Every line the server logged so far.
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// Starts it with `--egress-allow 127.0.0.1/32` and `args`, logging at AGP's default level.
    pub fn start(data: &Path, args: &[&str]) -> Server {
        Server::start_logging(data, args, None)
    }

    /// Like [`start`](Self::start), with `AGP_LOG` set to `level` (e.g. `debug`).
    pub fn start_logging(data: &Path, args: &[&str], level: Option<&str>) -> Server {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_agp"));
        cmd.args([
            "serve",
            "--log-format",
            "json",
            "--listen",
            "127.0.0.1:0",
            "--egress-allow",
            "127.0.0.1/32",
        ])
        .args(args)
        .env("AGP_DATA_DIR", data)
        .env_remove("AGP_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        if let Some(level) = level {
            cmd.env("AGP_LOG", level);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let kept = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                kept.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
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
        // A replica that did not create the cluster's admin token has none in its directory:
        // the test gives it the creator's.
        let token = std::fs::read_to_string(data.join("admin.token")).unwrap_or_default();
        Server {
            child,
            base: format!("http://127.0.0.1:{port}"),
            token: token.trim().to_string(),
            logs,
        }
    }

    /// SIGKILL, at once: no shutdown, nothing flushed that was not already durable.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to end (its last lines are then in `logs`).
    pub fn stop(mut self) -> Vec<String> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(200));
        self.logs.lock().unwrap().clone()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
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

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.send(reqwest::Method::GET, path, None).await
    }
}
