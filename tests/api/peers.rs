//! The real third-party peers (`tools/test-peers`): an `oidc-provider` authorization server
//! and an MCP server on the official TypeScript SDK, MCP servers behind the official
//! TypeScript and Python SDKs' own authorization servers, started per test on loopback, and a
//! consent driver that walks the provider's real login and consent pages over HTTP.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

/// A started node peer; killed when dropped.
pub struct Peer {
    child: Child,
    pub ready: Value,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/test-peers")
}

/// Starts `node tools/test-peers/<script> <args>` and waits for its JSON ready line.
pub fn start(script: &str, args: &[&str]) -> Peer {
    let dir = peers_dir();
    assert!(
        dir.join("node_modules").exists(),
        "the test peers are not installed: run `npm ci --prefix tools/test-peers` (.ci/run does)"
    );
    let mut cmd = Command::new("node");
    cmd.arg(dir.join(script)).args(args);
    spawn(cmd, script)
}

/// Runs `cmd` (a peer) and waits for its JSON ready line on stdout.
fn spawn(mut cmd: Command, label: &str) -> Peer {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(if std::env::var_os("AGP_PEER_LOGS").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap_or_else(|e| panic!("{label}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{label} did not become ready"));
    let ready: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("{label}: {line}"));
    assert_eq!(ready["ready"], true, "{label}: {line}");
    Peer { child, ready }
}

/// Starts `tools/test-peers/.venv/bin/python tools/test-peers/<script> <args>` and waits for its
/// JSON ready line.
fn start_python(script: &str, args: &[&str]) -> Peer {
    let dir = peers_dir();
    let python = dir.join(".venv/bin/python");
    assert!(
        python.exists(),
        "the Python test peers are not installed: run `tools/test` (it creates \
         tools/test-peers/.venv from requirements.txt; .ci/run does)"
    );
    let mut cmd = Command::new(python);
    cmd.arg(dir.join(script)).args(args);
    spawn(cmd, script)
}

/// `authlib_server.py`: an authorization server on authlib (a third AS implementation, beside
/// oidc-provider and the SDKs' own) and the MCP server on the official Python SDK it protects,
/// started with the quirks a test names (`--no-refresh`, `--reject-resource`, …). No DCR:
/// clients are registered with `--client ID:SECRET:METHOD`. Consent is automatic.
pub struct AuthlibServer {
    pub peer: Peer,
}

impl AuthlibServer {
    pub fn start(args: &[&str]) -> AuthlibServer {
        let mut all = vec!["--port", "0", "--mcp-port", "0"];
        all.extend_from_slice(args);
        AuthlibServer {
            peer: start_python("authlib_server.py", &all),
        }
    }

    pub fn issuer(&self) -> String {
        self.peer.ready["issuer"].as_str().unwrap().to_string()
    }

    pub fn mcp_url(&self) -> String {
        self.peer.ready["url"].as_str().unwrap().to_string()
    }

    /// The RFC 8414 metadata document it serves.
    pub fn metadata(&self) -> &Value {
        &self.peer.ready["metadata"]
    }

    fn admin(&self, path: &str) -> String {
        format!("{}{path}", self.peer.ready["admin"].as_str().unwrap())
    }

    /// Is `token` (access or refresh) still active at the provider?
    pub async fn active(&self, token: &str) -> bool {
        let v: Value = reqwest::Client::new()
            .post(self.admin("/__test/introspect"))
            .json(&serde_json::json!({"token": token}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["active"] == true
    }

    /// Every authorization request's parameters (`state` and `code_challenge` as `<present>`).
    pub async fn authorize_requests(&self) -> Vec<Value> {
        self.list("/__test/authorize-requests").await
    }

    /// Every token and revocation request: `endpoint`, `grant_type`, `basic`,
    /// `client_id_in_body`, `client_secret_in_body`, `resource`, `status`.
    pub async fn token_requests(&self) -> Vec<Value> {
        self.list("/__test/token-requests").await
    }

    async fn list(&self, path: &str) -> Vec<Value> {
        let v: Value = reqwest::get(self.admin(path))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().unwrap().clone()
    }

    /// Revokes every token, as a user revoking the app at the provider does.
    pub async fn revoke_all(&self) {
        let r = reqwest::Client::new()
            .post(self.admin("/__test/revoke-all"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

/// Which official MCP SDK's built-in authorization server an [`SdkServer`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sdk {
    /// `sdk-server.mjs`: `mcpAuthRouter` of `@modelcontextprotocol/sdk` (npm).
    TypeScript,
    /// `sdk_server.py`: the auth routes of `mcp` (PyPI), in `tools/test-peers/.venv`.
    Python,
}

/// An MCP server whose authorization server is its SDK's own, in one process: issuer, token,
/// registration and revocation endpoints beside `/mcp`. Consent is automatic (no pages).
pub struct SdkServer {
    pub peer: Peer,
}

impl SdkServer {
    pub fn start(sdk: Sdk, args: &[&str]) -> SdkServer {
        let mut all = vec!["--port", "0"];
        all.extend_from_slice(args);
        let peer = match sdk {
            Sdk::TypeScript => start("sdk-server.mjs", &all),
            Sdk::Python => start_python("sdk_server.py", &all),
        };
        SdkServer { peer }
    }

    pub fn issuer(&self) -> String {
        self.peer.ready["issuer"].as_str().unwrap().to_string()
    }

    pub fn mcp_url(&self) -> String {
        self.peer.ready["url"].as_str().unwrap().to_string()
    }

    /// The SDK's RFC 8414 metadata document, as it served it at start.
    pub fn metadata(&self) -> &Value {
        &self.peer.ready["metadata"]
    }

    fn admin(&self) -> String {
        self.peer.ready["admin"].as_str().unwrap().to_string()
    }

    /// Is `token` (access or refresh) still active at the provider?
    pub async fn active(&self, token: &str) -> bool {
        let v: Value = reqwest::Client::new()
            .post(format!("{}/__test/introspect", self.admin()))
            .json(&serde_json::json!({"token": token}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v["active"] == true
    }

    /// How every token and revocation request so far authenticated: `endpoint`, `grant_type`,
    /// `basic`, `client_id_in_body`, `client_secret_in_body`, `status`.
    pub async fn requests(&self) -> Vec<Value> {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/__test/requests", self.admin()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        v.as_array().unwrap().clone()
    }
}

/// An authorization server and the MCP server it protects.
pub struct Provider {
    pub auth: Peer,
    pub mcp: Peer,
}

impl Provider {
    pub fn start(as_args: &[&str]) -> Provider {
        Self::start_with(as_args, &[])
    }

    /// [`Provider::start`] with extra MCP server options (e.g. `--hostile-tools`).
    pub fn start_with(as_args: &[&str], mcp_args: &[&str]) -> Provider {
        let mut args = vec!["--port", "0"];
        args.extend_from_slice(as_args);
        let auth = start("as.mjs", &args);
        let issuer = auth.ready["issuer"].as_str().unwrap().to_string();
        let mut args = vec!["--port", "0", "--issuer", &issuer];
        args.extend_from_slice(mcp_args);
        let mcp = start("mcp-server.mjs", &args);
        Provider { auth, mcp }
    }

    pub fn issuer(&self) -> String {
        self.auth.ready["issuer"].as_str().unwrap().to_string()
    }

    pub fn mcp_url(&self) -> String {
        self.mcp.ready["url"].as_str().unwrap().to_string()
    }

    /// Makes the MCP server refuse the next `count` requests bearing an otherwise valid token
    /// with 401 `invalid_token`, as if the provider had revoked it (`POST /__test/reject-tokens`).
    pub async fn reject_tokens(&self, count: u64) {
        let admin = self.mcp.ready["admin"].as_str().unwrap();
        let r = reqwest::Client::new()
            .post(format!("{admin}/__test/reject-tokens"))
            .json(&serde_json::json!({"count": count}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "reject-tokens");
    }

    /// Changes upstream tool `tool` live through the MCP server's test admin API
    /// (`POST /__test/tools/{name}`: `description`, `title`, `annotations`, `enabled`).
    pub async fn change_tool(&self, tool: &str, change: Value) {
        let admin = self.mcp.ready["admin"].as_str().unwrap();
        let r = reqwest::Client::new()
            .post(format!("{admin}/__test/tools/{tool}"))
            .json(&change)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "changing {tool}: {}", r.status());
    }

    /// Adds `count` read tools named `{prefix}{i}` upstream through the MCP server's test admin
    /// API (`POST /__test/tools`), 50 at a time.
    pub async fn add_tools(&self, prefix: &str, count: usize) {
        let admin = self.mcp.ready["admin"].as_str().unwrap();
        let http = reqwest::Client::new();
        let names: Vec<String> = (0..count).map(|i| format!("{prefix}{i}")).collect();
        for chunk in names.chunks(50) {
            let adds = chunk.iter().map(|name| {
                http.post(format!("{admin}/__test/tools"))
                    .json(&serde_json::json!({"name": name}))
                    .send()
            });
            for r in futures::future::join_all(adds).await {
                let r = r.unwrap();
                assert!(r.status().is_success(), "adding a tool: {}", r.status());
            }
        }
    }

    /// RFC 7662 introspection with the resource server's credentials: is `token` active?
    pub async fn introspect(&self, token: &str, hint: &str) -> bool {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("{}/token/introspection", self.issuer()))
            .basic_auth("mcp-resource-server", Some("secret"))
            .form(&[("token", token), ("token_type_hint", hint)])
            .send()
            .await
            .unwrap();
        let v: Value = r.json().await.unwrap();
        v["active"] == true
    }
}

/// A browser: cookie jar, no automatic redirects.
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn location(base: &str, r: &reqwest::Response) -> String {
    let loc = r.headers()["location"].to_str().unwrap();
    url::Url::parse(base)
        .unwrap()
        .join(loc)
        .unwrap()
        .to_string()
}

/// Opens AGP's consent URL in `browser`, logs in as `login` and approves (or aborts) on the
/// provider's real pages, follows the callback, and returns AGP's result as JSON.
pub async fn consent(
    browser: &reqwest::Client,
    consent_url: &str,
    login: &str,
    approve: bool,
) -> Value {
    let mut url = consent_url.to_string();
    let mut steps = Vec::new();
    for _ in 0..20 {
        let r = browser.get(&url).send().await.unwrap();
        let status = r.status().as_u16();
        steps.push(format!("GET {url} -> {status}"));
        if (300..400).contains(&status) {
            url = location(&url, &r);
            continue;
        }
        if url.contains("/connect/result/") {
            let r = browser
                .get(&url)
                .header("accept", "application/json")
                .send()
                .await
                .unwrap();
            return r.json().await.unwrap();
        }
        let html = r.text().await.unwrap();
        assert_eq!(status, 200, "{steps:#?}\n{html}");
        let form = if !approve {
            // Deny: the provider's abort link.
            url = format!("{url}/abort");
            continue;
        } else if html.contains("name=\"login\"") || html.contains("prompt\" value=\"login") {
            vec![("prompt", "login"), ("login", login), ("password", "x")]
        } else {
            vec![("prompt", "consent")]
        };
        let r = browser.post(&url).form(&form).send().await.unwrap();
        steps.push(format!("POST {url} -> {}", r.status()));
        assert!(r.status().is_redirection(), "{steps:#?}");
        url = location(&url, &r);
    }
    panic!("consent did not finish: {steps:#?}");
}

/// An agent: the official TypeScript SDK's MCP client (`tools/test-peers/agent.mjs`) connected
/// to AGP's `/mcp`, driven line by line. Killed when dropped.
pub struct Agent {
    child: Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<Value>,
    /// Unprompted lines (`{"event": …}`) seen while waiting for answers.
    events: Vec<Value>,
    next_id: u64,
    pub session: Option<String>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Connects with `key` (none when `None`) and extra `headers`; `Err` carries the client's
    /// error when the connection is refused.
    pub fn connect(url: &str, key: Option<&str>, headers: &[&str]) -> Result<Agent, Value> {
        let dir = peers_dir();
        let mut cmd = Command::new("node");
        cmd.arg(dir.join("agent.mjs")).args(["--url", url]);
        if let Some(k) = key {
            cmd.args(["--key", k]);
        }
        for h in headers {
            cmd.args(["--header", h]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("AGP_PEER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("node is installed");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                let Ok(v) = serde_json::from_str::<Value>(&line) else {
                    continue;
                };
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let ready = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("agent.mjs answered");
        if ready["ready"] != true {
            let _ = child.kill();
            let _ = child.wait();
            return Err(ready["error"].clone());
        }
        Ok(Agent {
            child,
            stdin,
            lines,
            events: Vec::new(),
            next_id: 0,
            session: ready["session"].as_str().map(str::to_string),
        })
    }

    fn request(&mut self, mut cmd: Value) -> Value {
        use std::io::Write;
        self.next_id += 1;
        let id = self.next_id;
        cmd["id"] = id.into();
        writeln!(self.stdin, "{cmd}").expect("agent stdin");
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("agent did not answer {cmd}"));
            if line["id"] == id {
                return line;
            }
            if line.get("event").is_some() {
                self.events.push(line);
            }
        }
    }

    /// `tools/list`: the tools' names, sorted, and the full list.
    pub fn list(&mut self) -> (Vec<String>, Value) {
        let r = self.request(serde_json::json!({"op": "list"}));
        let tools = r["tools"].clone();
        assert!(tools.is_array(), "tools/list failed: {r}");
        let mut names: Vec<String> = tools
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        (names, tools)
    }

    /// `tools/call`: `Ok(result)` or `Err(error)` (`code`, `message`, `data`).
    pub fn call(&mut self, name: &str, arguments: Value) -> Result<Value, Value> {
        let r =
            self.request(serde_json::json!({"op": "call", "name": name, "arguments": arguments}));
        match r.get("result") {
            Some(result) => Ok(result.clone()),
            None => Err(r["error"].clone()),
        }
    }

    /// Sends a `tools/call` carrying a `progressToken`, without waiting; its answer (from
    /// [`Agent::next_raw_answer`]) counts the progress notifications received in `progress`.
    pub fn send_call_with_progress(&mut self, name: &str, arguments: Value) -> u64 {
        use std::io::Write;
        self.next_id += 1;
        let cmd = serde_json::json!({"id": self.next_id, "op": "call", "name": name,
            "arguments": arguments, "progress": true});
        writeln!(self.stdin, "{cmd}").expect("agent stdin");
        self.next_id
    }

    /// The next answer line as the agent printed it (`id`, `result` or `error`, `progress`).
    pub fn next_raw_answer(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if line.get("id").is_some() {
                return Some(line);
            }
            if line.get("event").is_some() {
                self.events.push(line);
            }
        }
    }

    /// Sends a `tools/call` without waiting for its answer, so several can be in flight;
    /// returns its id, which [`Agent::next_answer`] names.
    pub fn send_call(&mut self, name: &str, arguments: Value) -> u64 {
        use std::io::Write;
        self.next_id += 1;
        let cmd = serde_json::json!({"id": self.next_id, "op": "call", "name": name,
            "arguments": arguments});
        writeln!(self.stdin, "{cmd}").expect("agent stdin");
        self.next_id
    }

    /// The next answer to a call sent with [`Agent::send_call`]: its id and `Ok(result)` or
    /// `Err(error)`; `None` when none comes within `timeout`. Notifications seen meanwhile are
    /// kept for [`Agent::list_changed`].
    pub fn next_answer(&mut self, timeout: Duration) -> Option<(u64, Result<Value, Value>)> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.lines.recv_timeout(left).ok()?;
            if let Some(id) = line["id"].as_u64() {
                return Some(match line.get("result") {
                    Some(result) => (id, Ok(result.clone())),
                    None => (id, Err(line["error"].clone())),
                });
            }
            if line.get("event").is_some() {
                self.events.push(line);
            }
        }
    }

    /// Waits up to `timeout` for a `tools_list_changed` notification (consumes it).
    pub fn list_changed(&mut self, timeout: Duration) -> bool {
        if let Some(i) = self
            .events
            .iter()
            .position(|e| e["event"] == "tools_list_changed")
        {
            self.events.remove(i);
            return true;
        }
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line["event"] == "tools_list_changed" => return true,
                Ok(line) => self.events.push(line),
                Err(_) => return false,
            }
        }
    }
}
