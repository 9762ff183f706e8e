//! The proxy benchmark (`cargo bench --bench proxy`, or `tools/bench-proxy`): `tools/call` straight
//! to an upstream MCP server versus through AGP's `/mcp`, in the same run, against the same
//! upstream process, with the same load generator.
//!
//! Set-up, all real processes on loopback:
//! - the test peers from `tools/test-peers`: the `oidc-provider` authorization server and the
//!   OAuth-protected MCP server on the official TypeScript SDK, started with
//!   `--introspection-cache-ms` (`AGP_BENCH_INTROSPECTION_CACHE_MS`, default 5000) so the
//!   upstream validates tokens like a resource server with a token cache would;
//! - `agp serve` (release) in a temporary data directory with `--egress-allow 127.0.0.1/32`; a
//!   connector added with DCR and consented on the provider's real pages (`drive-consent.mjs`),
//!   `echo` registered as `bench__echo`, a profile granted it, an agent created (its key is the
//!   proxied leg's bearer);
//! - for the direct leg the load generator is an ordinary OAuth client of the same provider: DCR,
//!   authorization code + PKCE S256 + `resource=<mcp url>` + scope `mcp:read`, consent through
//!   the same pages, code exchange. Its token is never printed.
//!
//! The load generator: per worker one HTTP/1.1 connection (hyper's connection-level client, no
//! pool) and one MCP session (`initialize`, `notifications/initialized`), then a closed loop of
//! `tools/call echo {"text": <unique per call>}`. Every response is checked: a JSON-RPC result
//! (answered as `application/json` or as `text/event-stream`) whose `content[0].text` is exactly
//! the text sent. Any error or mismatch fails the run. Latency is recorded per call (every
//! sample kept, percentiles exact).
//!
//! Rounds (`AGP_BENCH_ROUNDS`, default 3), after a warm-up of each leg
//! (`AGP_BENCH_WARMUP_SECS`, default 3): for each concurrency in `AGP_BENCH_CONCURRENCY`
//! (default `1,64`), a direct and a proxied run of `AGP_BENCH_SECS` (default 10) seconds each.
//! The two runs take turns in slices of `AGP_BENCH_SLICE_MS` (default 1000; each slice on fresh
//! MCP sessions), alternating which leg goes first, and each run pools its slices: both legs
//! thus meet the same moments of a shared machine, where two back-to-back 10 s runs did not
//! (decision 0010; `AGP_BENCH_SLICE_MS=10000` runs the legs back to back). Prints every run,
//! then medians: p50/p99/p99.9 per leg, the added latency (proxied − direct, per round,
//! median), throughput per leg and proxied/direct; the CPU each process used; the upstream's
//! young-generation garbage collections per leg (`GET /__test/gc` of the test MCP server: how
//! often one lands in a call, and how long it pauses it); and how much AGP's log grew during the
//! proxied runs (the durable call record). `AGP_BENCH_UPSTREAM_SEMI_SPACE_MB` starts the upstream
//! with that young generation (`node --max-semi-space-size`), which moves its collections out of
//! the p99. `AGP_BENCH_LEGS=direct` measures only the direct leg (for a build without the
//! proxy). `AGP_BENCH_CLIENT_THREADS` (default 1): the load generator's runtime threads.
//! `AGP_PEER_LOGS=1` shows the peers' request logs. `AGP_BENCH_OPERATION=write` makes
//! `bench__echo` a write (its call record durable before the call goes upstream; default read).

#[path = "../tests/support/postgres.rs"]
mod pg_server;
mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail, ensure};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Agp, env_u64, median, status_mib};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The protocol version the load generator offers; the server's answer is used afterwards.
const PROTOCOL_VERSION: &str = "2025-06-18";

// --- configuration ----------------------------------------------------------------------------

struct Settings {
    secs: u64,
    /// Each leg's `secs` per round are run in slices of this many ms, the legs taking turns.
    slice_ms: u64,
    warmup_secs: u64,
    rounds: u64,
    concurrency: Vec<usize>,
    legs: Vec<Leg>,
    cache_ms: u64,
    client_threads: usize,
    /// The upstream's young generation (`--max-semi-space-size`, MiB); node's default if unset.
    upstream_semi_space_mb: Option<u64>,
    /// Held calls approved after the runs, to time approval → upstream (0: none).
    approvals: u64,
    upstream: Upstream,
    /// Soak mode (`tools/bench-soak`): seconds of proxied calls at the highest concurrency,
    /// sampling AGP's memory and data directory (0: the ordinary benchmark).
    soak_secs: u64,
    soak_sample_secs: u64,
    /// `bench__echo`'s operation fact (`AGP_BENCH_OPERATION`, read or write): a write's call
    /// record is durable before the call goes upstream, a read's is written meanwhile.
    operation: &'static str,
}

/// Which MCP server the calls go to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Upstream {
    /// `examples/echo_upstream.rs`: rmcp, stateless, JSON answers, one thread. Costs next to
    /// nothing per call, so the added figures are AGP's own.
    Rust,
    /// The node test server (`tools/test-peers/mcp-server.mjs`), with its garbage collector.
    Node,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        let concurrency = std::env::var("AGP_BENCH_CONCURRENCY")
            .unwrap_or_else(|_| "1,64".into())
            .split(',')
            .map(|c| c.trim().parse::<usize>())
            .collect::<Result<Vec<_>, _>>()
            .context("AGP_BENCH_CONCURRENCY: comma-separated worker counts, e.g. 1,64")?;
        ensure!(
            concurrency.iter().all(|&c| c > 0),
            "AGP_BENCH_CONCURRENCY: counts must be positive"
        );
        let legs = match std::env::var("AGP_BENCH_LEGS").as_deref() {
            Err(_) | Ok("both") | Ok("direct,proxied") => vec![Leg::Direct, Leg::Proxied],
            Ok("direct") => vec![Leg::Direct],
            Ok("proxied") => vec![Leg::Proxied],
            Ok(other) => bail!("AGP_BENCH_LEGS must be both, direct or proxied (got {other:?})"),
        };
        let upstream = match std::env::var("AGP_BENCH_UPSTREAM").as_deref() {
            Err(_) | Ok("rust") => Upstream::Rust,
            Ok("node") => Upstream::Node,
            Ok(other) => bail!("AGP_BENCH_UPSTREAM must be rust or node (got {other:?})"),
        };
        let operation = match std::env::var("AGP_BENCH_OPERATION").as_deref() {
            Err(_) | Ok("read") => "read",
            Ok("write") => "write",
            Ok(other) => bail!("AGP_BENCH_OPERATION must be read or write (got {other:?})"),
        };
        Ok(Settings {
            operation,
            upstream,
            secs: env_u64("AGP_BENCH_SECS", 10).max(1),
            slice_ms: env_u64("AGP_BENCH_SLICE_MS", 1000).max(100),
            warmup_secs: env_u64("AGP_BENCH_WARMUP_SECS", 3),
            rounds: env_u64("AGP_BENCH_ROUNDS", 3).max(1),
            concurrency,
            legs,
            cache_ms: env_u64("AGP_BENCH_INTROSPECTION_CACHE_MS", 5000),
            approvals: env_u64("AGP_BENCH_APPROVALS", 20),
            soak_secs: env_u64("AGP_BENCH_SOAK_SECS", 0),
            soak_sample_secs: env_u64("AGP_BENCH_SOAK_SAMPLE_SECS", 10).max(1),
            client_threads: env_u64("AGP_BENCH_CLIENT_THREADS", 1).max(1) as usize,
            upstream_semi_space_mb: std::env::var("AGP_BENCH_UPSTREAM_SEMI_SPACE_MB")
                .ok()
                .map(|v| v.parse::<u64>())
                .transpose()
                .context("AGP_BENCH_UPSTREAM_SEMI_SPACE_MB: a size in MiB, e.g. 64")?,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Leg {
    Direct,
    Proxied,
}

impl Leg {
    fn as_str(self) -> &'static str {
        match self {
            Leg::Direct => "direct",
            Leg::Proxied => "proxied",
        }
    }
}

// --- the test peers ---------------------------------------------------------------------------

fn peers_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tools/test-peers")
}

/// A node peer from `tools/test-peers`; killed when dropped.
struct Peer {
    child: Child,
    ready: Value,
}

impl Peer {
    fn start(script: &str, args: &[&str]) -> anyhow::Result<Peer> {
        Peer::start_with(&[], script, args)
    }

    /// Like [`start`](Self::start), with flags for node itself.
    fn start_with(node_flags: &[String], script: &str, args: &[&str]) -> anyhow::Result<Peer> {
        let dir = peers_dir();
        ensure!(
            dir.join("node_modules").exists(),
            "the test peers are not installed: run `npm ci --prefix tools/test-peers`"
        );
        let mut cmd = Command::new("node");
        cmd.args(node_flags).arg(dir.join(script)).args(args);
        Peer::spawn(cmd, script)
    }

    /// A program that prints the same ready line (the Rust upstream).
    fn start_program(program: &std::path::Path, args: &[&str]) -> anyhow::Result<Peer> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        Peer::spawn(cmd, &program.display().to_string())
    }

    fn spawn(mut cmd: Command, script: &str) -> anyhow::Result<Peer> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(if std::env::var_os("AGP_PEER_LOGS").is_some() {
                Stdio::inherit()
            } else {
                Stdio::null()
            })
            .spawn()
            .with_context(|| {
                format!("starting {script} (for a node peer: is Node.js 20.19+ installed?)")
            })?;
        let stdout = child.stdout.take().context("the peer's stdout")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .map_err(|_| anyhow!("{script} did not print its ready line within 30 s"))?;
        let ready: Value = serde_json::from_str(&line)
            .with_context(|| format!("{script} printed {line:?} instead of its ready line"))?;
        ensure!(ready["ready"] == true, "{script}: {line}");
        Ok(Peer { child, ready })
    }

    fn field(&self, name: &str) -> anyhow::Result<String> {
        self.ready[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the ready line has no {name}"))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The release build of `examples/echo_upstream.rs` (built here if needed).
fn echo_upstream() -> anyhow::Result<PathBuf> {
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--quiet",
            "--example",
            "echo_upstream",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .context("building examples/echo_upstream.rs")?;
    ensure!(
        status.success(),
        "building examples/echo_upstream.rs failed"
    );
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    Ok(target.join("release/examples/echo_upstream"))
}

/// Walks the provider's login and consent pages for `authorize_url` with `drive-consent.mjs`
/// and returns the callback URL it stopped at (which carries the code: never printed).
fn drive_consent(authorize_url: &str) -> anyhow::Result<url::Url> {
    let out = Command::new("node")
        .arg(peers_dir().join("drive-consent.mjs"))
        .arg(authorize_url)
        .arg("--login")
        .arg("bench")
        .stderr(Stdio::inherit())
        .output()
        .context("running drive-consent.mjs")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .context("drive-consent.mjs did not print its JSON line")?;
    if v["ok"] != true {
        bail!("consent failed: {}", v["error"]);
    }
    let callback = v["callback"]
        .as_str()
        .context("drive-consent.mjs printed no callback")?;
    url::Url::parse(callback).context("the callback URL")
}

fn random_b64(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("no randomness: {e}"))?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The load generator's own access token for the upstream, obtained as an ordinary OAuth client:
/// RFC 7591 registration, authorization code with PKCE S256, `resource` and scope `mcp:read`.
async fn direct_token(issuer: &str, mcp_url: &str) -> anyhow::Result<String> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let meta: Value = http
        .get(format!("{issuer}/.well-known/openid-configuration"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let endpoint = |name: &str| {
        meta[name]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("the provider's metadata has no {name}"))
    };
    // The redirect URI is a loopback port we hold for the duration; the consent driver stops at
    // the redirect to it and hands us the URL, so nothing needs to answer there.
    let holder = std::net::TcpListener::bind("127.0.0.1:0")?;
    let redirect_uri = format!("http://127.0.0.1:{}/cb", holder.local_addr()?.port());
    let reg = http
        .post(endpoint("registration_endpoint")?)
        .json(&json!({
            "client_name": "agp bench load generator",
            "redirect_uris": [redirect_uri],
            "grant_types": ["authorization_code"],
            "response_types": ["code"],
            "token_endpoint_auth_method": "client_secret_basic",
        }))
        .send()
        .await?;
    ensure!(
        reg.status() == 201,
        "client registration answered {}",
        reg.status()
    );
    let reg: Value = reg.json().await?;
    let client_id = reg["client_id"]
        .as_str()
        .context("registration: no client_id")?
        .to_string();
    let client_secret = reg["client_secret"]
        .as_str()
        .context("registration: no client_secret")?
        .to_string();

    let verifier = random_b64(32)?;
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64(16)?;
    let mut authorize = url::Url::parse(&endpoint("authorization_endpoint")?)?;
    authorize
        .query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("scope", "mcp:read")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("resource", mcp_url);
    let callback = drive_consent(authorize.as_str())?;
    drop(holder);
    let param = |name: &str| {
        callback
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    ensure!(
        callback.as_str().starts_with(&redirect_uri),
        "consent redirected elsewhere than the redirect URI"
    );
    if let Some(e) = param("error") {
        bail!("authorization failed: {e}");
    }
    ensure!(
        param("state").as_deref() == Some(state.as_str()),
        "state mismatch"
    );
    ensure!(param("iss").as_deref() == Some(issuer), "iss mismatch");
    let code = param("code").context("the callback has no code")?;
    let token = http
        .post(endpoint("token_endpoint")?)
        .basic_auth(&client_id, Some(&client_secret))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect_uri.as_str()),
            ("code_verifier", verifier.as_str()),
            ("resource", mcp_url),
        ])
        .send()
        .await?;
    ensure!(
        token.status() == 200,
        "the code exchange answered {}",
        token.status()
    );
    let token: Value = token.json().await?;
    ensure!(
        token["token_type"]
            .as_str()
            .is_some_and(|t| t.eq_ignore_ascii_case("bearer")),
        "the token response is not a bearer token"
    );
    token["access_token"]
        .as_str()
        .map(str::to_string)
        .context("the token response has no access_token")
}

// --- AGP set-up through its CLI ---------------------------------------------------------------

/// Runs `agp --server <url> --data-dir <dir> <args> --output json` and parses its answer.
fn agp_cli(agp: &Agp, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_agp"))
        .arg("--server")
        .arg(agp.url())
        .arg("--data-dir")
        .arg(&agp.data_dir)
        .args(args)
        .args(["--output", "json"])
        .env_remove("AGP_ADMIN_TOKEN")
        .stderr(Stdio::inherit())
        .output()
        .context("running the agp CLI")?;
    ensure!(
        out.status.success(),
        "agp {} failed: {}",
        args.first().copied().unwrap_or_default(),
        out.status
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("agp {}: not JSON", args.join(" ")))
}

/// Adds connector `bench` for `mcp_url`, consents on the provider's pages through AGP's consent
/// URL, registers `echo`, grants `bench__echo` to a profile and creates an agent: its key.
async fn agp_setup(agp: &Agp, mcp_url: &str, operation: &str) -> anyhow::Result<String> {
    let added = agp_cli(
        agp,
        &[
            "connectors",
            "add",
            "--name",
            "bench",
            "--mcp-server-url",
            mcp_url,
            "--dcr",
        ],
    )?;
    let start = added["authorize_url"]
        .as_str()
        .context("connectors add: no authorize_url")?;
    // A browser: AGP's start URL sets the flow cookie and redirects to the provider; the driver
    // walks the provider's pages; the browser then follows the callback back to AGP.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let r = browser.get(start).send().await?;
    ensure!(
        r.status().is_redirection(),
        "AGP's consent URL answered {}",
        r.status()
    );
    let to_provider = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .context("AGP's consent URL redirected nowhere")?
        .to_string();
    let callback = drive_consent(&to_provider)?;
    let r = browser.get(callback).send().await?;
    ensure!(
        r.status().is_redirection(),
        "AGP's callback answered {}",
        r.status()
    );
    let result = r
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .context("AGP's callback redirected nowhere")?;
    let result = url::Url::parse(&agp.url())?.join(result)?;
    let outcome: Value = browser
        .get(result)
        .header("accept", "application/json")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        outcome["outcome"] == "authorized",
        "consent did not authorize the connector: {}",
        outcome["outcome"]
    );
    agp_cli(
        agp,
        &[
            "connectors",
            "register-tools",
            "--name",
            "bench",
            "--tool",
            "echo",
        ],
    )?;
    if operation != "read" {
        agp_cli(
            agp,
            &[
                "tools",
                "set-operation",
                "--name",
                "bench__echo",
                "--operation",
                operation,
                "--reason",
                "proxy benchmark",
            ],
        )?;
    }
    agp_cli(agp, &["profiles", "create", "--name", "bench"])?;
    if operation != "read" {
        // Writes are held for a person by default: the benchmark measures the allowed path.
        agp_cli(
            agp,
            &[
                "profiles",
                "policy",
                "--name",
                "bench",
                "--write",
                "allow",
                "--reason",
                "proxy benchmark",
            ],
        )?;
    }
    agp_cli(
        agp,
        &[
            "profiles",
            "grant",
            "--name",
            "bench",
            "--tool",
            "bench__echo",
            "--reason",
            "proxy benchmark",
        ],
    )?;
    let agent = agp_cli(
        agp,
        &["agents", "create", "--name", "bench", "--profile", "bench"],
    )?;
    agent["key"]
        .as_str()
        .map(str::to_string)
        .context("agents create: no key")
}

/// AGP's log head, from `/readyz`.
async fn log_head(agp: &Agp) -> anyhow::Result<u64> {
    let v: Value = reqwest::get(format!("{}/readyz", agp.url()))
        .await?
        .json()
        .await?;
    v["log_head"].as_u64().context("/readyz has no log_head")
}

/// Event types appended after `after`, with counts (read through `GET /api/v1/events`).
async fn appended_types(agp: &Agp, after: u64) -> anyhow::Result<BTreeMap<String, u64>> {
    let http = reqwest::Client::new();
    let token = agp.admin_token()?;
    let mut from = after + 1;
    let mut counts = BTreeMap::new();
    loop {
        let page: Vec<Value> = http
            .get(format!(
                "{}/api/v1/events?from={from}&limit=10000",
                agp.url()
            ))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let Some(last) = page.last() else { break };
        from = last["seq"].as_u64().context("an event without seq")? + 1;
        for e in &page {
            *counts
                .entry(e["type"].as_str().unwrap_or("?").to_string())
                .or_insert(0) += 1;
        }
    }
    Ok(counts)
}

// --- the load generator -----------------------------------------------------------------------

/// Where one leg sends its calls.
#[derive(Clone)]
struct Target {
    addr: std::net::SocketAddr,
    /// `Host` header value.
    authority: HeaderValue,
    path: String,
    /// `Bearer <credential>`, marked sensitive.
    authorization: HeaderValue,
    tool: String,
}

impl Target {
    fn new(url: &str, credential: &str, tool: &str) -> anyhow::Result<Target> {
        let u = url::Url::parse(url)?;
        let addr = u
            .socket_addrs(|| None)?
            .into_iter()
            .next()
            .context("the URL has no address")?;
        let mut authorization = HeaderValue::from_str(&format!("Bearer {credential}"))
            .map_err(|_| anyhow!("the credential is not a valid header value"))?;
        authorization.set_sensitive(true);
        Ok(Target {
            addr,
            authority: HeaderValue::from_str(&format!("127.0.0.1:{}", addr.port()))?,
            path: u.path().to_string(),
            authorization,
            tool: tool.to_string(),
        })
    }
}

#[derive(Deserialize)]
struct RpcResponse {
    id: Option<Value>,
    result: Option<CallResult>,
    error: Option<Value>,
}

#[derive(Deserialize)]
struct CallResult {
    #[serde(default)]
    content: Vec<Content>,
    #[serde(default, rename = "isError")]
    is_error: bool,
    #[serde(default, rename = "protocolVersion")]
    protocol_version: Option<String>,
}

#[derive(Deserialize)]
struct Content {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    text: Option<String>,
}

/// The JSON-RPC response with `id` in a POST's answer: the JSON body itself, or the `data:` of
/// one of the events of an SSE body.
fn find_response(content_type: &[u8], body: &[u8], id: u64) -> anyhow::Result<RpcResponse> {
    let matches = |r: &RpcResponse| r.id.as_ref().and_then(Value::as_u64) == Some(id);
    if content_type.starts_with(b"text/event-stream") {
        let text = std::str::from_utf8(body).context("an SSE body that is not UTF-8")?;
        let mut data = String::new();
        // Events are separated by blank lines; `data:` lines of one event join with newlines.
        for line in text.lines().chain(std::iter::once("")) {
            if let Some(d) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(d.strip_prefix(' ').unwrap_or(d));
            } else if line.is_empty() && !data.is_empty() {
                if let Ok(r) = serde_json::from_str::<RpcResponse>(&data)
                    && matches(&r)
                {
                    return Ok(r);
                }
                data.clear();
            }
        }
        bail!("no response with id {id} in the event stream");
    }
    ensure!(
        content_type.starts_with(b"application/json"),
        "unexpected content type {:?}",
        String::from_utf8_lossy(content_type)
    );
    let r: RpcResponse = serde_json::from_slice(body).context("a JSON body")?;
    ensure!(matches(&r), "a response for another id");
    Ok(r)
}

/// The response finder on both answer forms (the runs may only ever see one of them).
fn check_parser() -> anyhow::Result<()> {
    let ok = |r: RpcResponse| {
        r.result
            .and_then(|r| r.content.into_iter().next())
            .and_then(|c| c.text)
    };
    let json = br#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"a"}]}}"#;
    ensure!(ok(find_response(b"application/json", json, 7)?).as_deref() == Some("a"));
    let sse = concat!(
        "event: message\r\nid: 1\r\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/message\"}\r\n\r\n",
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\n",
        "data: \"result\":{\"content\":[{\"type\":\"text\",\"text\":\"b\"}]}}\n\n",
    );
    ensure!(ok(find_response(b"text/event-stream", sse.as_bytes(), 7)?).as_deref() == Some("b"));
    ensure!(find_response(b"text/event-stream", sse.as_bytes(), 8).is_err());
    ensure!(find_response(b"application/json", json, 8).is_err());
    Ok(())
}

fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned()
}

/// How a POST was answered.
#[derive(Debug)]
enum Answer {
    Json,
    EventStream,
}

/// One connection, one MCP session.
struct Session {
    sender: SendRequest<Full<Bytes>>,
    target: Target,
    session_id: Option<HeaderValue>,
    protocol: HeaderValue,
    next_id: u64,
}

impl Session {
    async fn open(target: &Target) -> anyhow::Result<Session> {
        let tcp = tokio::net::TcpStream::connect(target.addr).await?;
        tcp.set_nodelay(true)?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut s = Session {
            sender,
            target: target.clone(),
            session_id: None,
            protocol: HeaderValue::from_static(PROTOCOL_VERSION),
            next_id: 1,
        };
        let init = json!({
            "jsonrpc": "2.0", "id": 0, "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": {"name": "agp-bench", "version": "1"}
            }
        });
        let (status, headers, body) = s.post(init.to_string().into_bytes(), false).await?;
        ensure!(
            status == StatusCode::OK,
            "initialize answered {status}: {}",
            snippet(&body)
        );
        let ct = headers
            .get(CONTENT_TYPE)
            .map(|v| v.as_bytes().to_vec())
            .unwrap_or_default();
        let r = find_response(&ct, &body, 0)?;
        if let Some(e) = r.error {
            bail!("initialize failed: {e}");
        }
        let version = r
            .result
            .and_then(|r| r.protocol_version)
            .context("initialize: no protocolVersion")?;
        s.protocol = HeaderValue::from_str(&version)?;
        // A stateless server (the Rust upstream) gives none.
        s.session_id = headers.get("mcp-session-id").cloned();
        let (status, _, body) = s
            .post(
                br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#.to_vec(),
                true,
            )
            .await?;
        ensure!(
            status == StatusCode::ACCEPTED,
            "notifications/initialized answered {status}: {}",
            snippet(&body)
        );
        Ok(s)
    }

    fn request(
        &self,
        method: Method,
        body: Vec<u8>,
        session: bool,
    ) -> anyhow::Result<Request<Full<Bytes>>> {
        let mut b = Request::builder()
            .method(method)
            .uri(self.target.path.as_str())
            .header(HOST, self.target.authority.clone())
            .header(AUTHORIZATION, self.target.authorization.clone())
            .header(CONTENT_TYPE, "application/json")
            .header(ACCEPT, "application/json, text/event-stream");
        if session {
            if let Some(id) = &self.session_id {
                b = b.header("mcp-session-id", id.clone());
            }
            b = b.header("mcp-protocol-version", self.protocol.clone());
        }
        Ok(b.body(Full::new(Bytes::from(body)))?)
    }

    async fn send(
        &mut self,
        req: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        self.sender.ready().await?;
        let resp = self.sender.send_request(req).await?;
        let (parts, body) = resp.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok((parts.status, parts.headers, body))
    }

    async fn post(
        &mut self,
        body: Vec<u8>,
        session: bool,
    ) -> anyhow::Result<(StatusCode, hyper::HeaderMap, Bytes)> {
        let req = self.request(Method::POST, body, session)?;
        self.send(req).await
    }

    /// One `tools/call` of the echo tool with `text`, checked; says how it was answered.
    async fn call(&mut self, text: &str) -> anyhow::Result<Answer> {
        let id = self.next_id;
        self.next_id += 1;
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{}","arguments":{{"text":"{text}"}}}}}}"#,
            self.target.tool
        );
        let (status, headers, body) = self.post(body.into_bytes(), true).await?;
        ensure!(
            status == StatusCode::OK,
            "tools/call answered {status}: {}",
            snippet(&body)
        );
        let ct = headers
            .get(CONTENT_TYPE)
            .map(|v| v.as_bytes())
            .unwrap_or_default();
        let r = find_response(ct, &body, id)?;
        if let Some(e) = r.error {
            bail!("tools/call error: {e}");
        }
        let result = r.result.context("tools/call: neither result nor error")?;
        ensure!(!result.is_error, "tools/call: isError: {}", snippet(&body));
        let answer = if ct.starts_with(b"text/event-stream") {
            Answer::EventStream
        } else {
            Answer::Json
        };
        match result.content.first() {
            Some(c) if c.kind == "text" && c.text.as_deref() == Some(text) => Ok(answer),
            _ => bail!(
                "tools/call: content[0].text is not what was sent: {}",
                snippet(&body)
            ),
        }
    }

    /// Ends the session (`DELETE`); the server may refuse (405), which is fine.
    async fn close(mut self) {
        if self.session_id.is_none() {
            return;
        }
        if let Ok(req) = self.request(Method::DELETE, Vec::new(), true) {
            let _ = self.send(req).await;
        }
    }
}

/// What one worker did in one run.
struct WorkerResult {
    started: Instant,
    ended: Instant,
    /// Nanoseconds per successful call.
    latencies: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

async fn worker(
    target: Target,
    n: usize,
    prefix: Arc<str>,
    length: Duration,
    barrier: Arc<tokio::sync::Barrier>,
) -> anyhow::Result<WorkerResult> {
    let session = Session::open(&target).await;
    barrier.wait().await;
    let mut session = session?;
    let started = Instant::now();
    let deadline = started + length;
    let mut latencies = Vec::with_capacity(16_384);
    let mut errors = 0;
    let mut first_error = None;
    let mut i = 0u64;
    while Instant::now() < deadline {
        i += 1;
        let text = format!("{prefix}-{n}-{i}");
        let t = Instant::now();
        match session.call(&text).await {
            Ok(_) => latencies.push(t.elapsed().as_nanos() as u64),
            Err(e) => {
                errors += 1;
                first_error.get_or_insert_with(|| format!("{e:#}"));
                if session.sender.is_closed() {
                    break;
                }
            }
        }
    }
    let ended = Instant::now();
    session.close().await;
    Ok(WorkerResult {
        started,
        ended,
        latencies,
        errors,
        first_error,
    })
}

/// CPU seconds (user + system) a process has used, from `/proc/<pid>/stat`.
fn cpu_secs(pid: u32, ticks_per_sec: f64) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the `(comm)`, which may contain spaces: state is field 3, utime 14.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_sec)
        })
        .unwrap_or(f64::NAN)
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// The processes whose CPU use each run reports.
struct Processes {
    names: Vec<&'static str>,
    pids: Vec<u32>,
    ticks: f64,
    /// The upstream's test admin API (its garbage collections), for the node upstream.
    upstream_admin: Option<String>,
}

impl Processes {
    fn sample(&self) -> Vec<f64> {
        self.pids.iter().map(|&p| cpu_secs(p, self.ticks)).collect()
    }
}

/// One slice of a run: every call's latency (ns), the wall time, and each process's CPU seconds.
struct Slice {
    latencies: Vec<u64>,
    secs: f64,
    cpu_secs: Vec<f64>,
    upstream_gc: GcCounts,
}

/// The upstream's requests served and young-generation collections (`GET /__test/gc` of the
/// test MCP server), or their growth over a slice.
#[derive(Debug, Clone, Copy, Default)]
struct GcCounts {
    requests: f64,
    minor: f64,
    minor_pause_ms: f64,
}

impl GcCounts {
    async fn sample(admin: Option<&str>) -> anyhow::Result<GcCounts> {
        let Some(admin) = admin else {
            return Ok(GcCounts::default());
        };
        let v: Value = reqwest::get(format!("{admin}/__test/gc"))
            .await?
            .error_for_status()?
            .json()
            .await?;
        let field = |name: &str| {
            v[name]
                .as_f64()
                .with_context(|| format!("/__test/gc has no {name}"))
        };
        Ok(GcCounts {
            requests: field("requests")?,
            minor: field("minor")?,
            minor_pause_ms: field("minorPauseMs")?,
        })
    }

    fn since(self, before: GcCounts) -> GcCounts {
        GcCounts {
            requests: self.requests - before.requests,
            minor: self.minor - before.minor,
            minor_pause_ms: self.minor_pause_ms - before.minor_pause_ms,
        }
    }

    /// "1 young GC per N requests, M ms each".
    fn describe(&self) -> String {
        if self.requests == 0.0 {
            return "no GC (rust)".to_string();
        }
        if self.minor == 0.0 {
            return format!("no young GC in {:.0} requests", self.requests);
        }
        format!(
            "1 young GC per {:.0} requests, {:.2} ms each",
            self.requests / self.minor,
            self.minor_pause_ms / self.minor
        )
    }

    fn add(self, other: GcCounts) -> GcCounts {
        GcCounts {
            requests: self.requests + other.requests,
            minor: self.minor + other.minor,
            minor_pause_ms: self.minor_pause_ms + other.minor_pause_ms,
        }
    }
}

/// One measured run of one leg at one concurrency: its slices pooled.
struct Run {
    leg: Leg,
    concurrency: usize,
    calls: u64,
    secs: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    /// CPU used per process during the run, in cores (1.0 = one core busy all the time).
    cores: Vec<f64>,
    upstream_gc: GcCounts,
}

impl Run {
    fn throughput(&self) -> f64 {
        self.calls as f64 / self.secs
    }

    fn from_slices(leg: Leg, concurrency: usize, slices: Vec<Slice>) -> Run {
        let secs: f64 = slices.iter().map(|s| s.secs).sum();
        let processes = slices.first().map_or(0, |s| s.cpu_secs.len());
        let cores = (0..processes)
            .map(|i| slices.iter().map(|s| s.cpu_secs[i]).sum::<f64>() / secs)
            .collect();
        let upstream_gc = slices
            .iter()
            .fold(GcCounts::default(), |sum, s| sum.add(s.upstream_gc));
        let mut all: Vec<u64> = slices.into_iter().flat_map(|s| s.latencies).collect();
        all.sort_unstable();
        Run {
            leg,
            concurrency,
            calls: all.len() as u64,
            secs,
            p50: quantile_us(&all, 0.50),
            p99: quantile_us(&all, 0.99),
            p999: quantile_us(&all, 0.999),
            cores,
            upstream_gc,
        }
    }
}

/// Microseconds at quantile `q` of sorted nanosecond samples.
fn quantile_us(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1_000.0
}

/// `concurrency` workers, each on an MCP session of its own, calling for `length`.
async fn run_slice(
    target: &Target,
    leg: Leg,
    concurrency: usize,
    length: Duration,
    procs: &Processes,
) -> anyhow::Result<Slice> {
    let gc_before = GcCounts::sample(procs.upstream_admin.as_deref()).await?;
    let prefix: Arc<str> = random_b64(6)?.into();
    let barrier = Arc::new(tokio::sync::Barrier::new(concurrency + 1));
    let mut set = tokio::task::JoinSet::new();
    for n in 0..concurrency {
        set.spawn(worker(
            target.clone(),
            n,
            prefix.clone(),
            length,
            barrier.clone(),
        ));
    }
    barrier.wait().await;
    let cpu_before = procs.sample();
    let mut results = Vec::with_capacity(concurrency);
    while let Some(r) = set.join_next().await {
        results.push(
            r.context("a worker panicked")?
                .with_context(|| format!("{} c={concurrency}", leg.as_str()))?,
        );
    }
    let cpu_after = procs.sample();
    let upstream_gc = GcCounts::sample(procs.upstream_admin.as_deref())
        .await?
        .since(gc_before);
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    if errors > 0 {
        let first = results
            .iter()
            .find_map(|r| r.first_error.clone())
            .unwrap_or_default();
        bail!(
            "{} c={concurrency}: {errors} calls failed; the first: {first}",
            leg.as_str()
        );
    }
    let started = results
        .iter()
        .map(|r| r.started)
        .min()
        .context("no workers")?;
    let ended = results
        .iter()
        .map(|r| r.ended)
        .max()
        .context("no workers")?;
    Ok(Slice {
        latencies: results.into_iter().flat_map(|r| r.latencies).collect(),
        secs: ended.duration_since(started).as_secs_f64(),
        cpu_secs: cpu_before
            .iter()
            .zip(&cpu_after)
            .map(|(b, a)| a - b)
            .collect(),
        upstream_gc,
    })
}

fn print_run(r: &Run, procs: &Processes) {
    let cpu: Vec<String> = procs
        .names
        .iter()
        .zip(&r.cores)
        .map(|(n, c)| format!("{n} {:.0}%", c * 100.0))
        .collect();
    eprintln!(
        "  {:<7} c={:<3} {:>7} calls {:>8.0}/s  p50 {:>7.0} µs  p99 {:>7.0} µs  p99.9 {:>7.0} µs  cpu: {}; upstream: {}",
        r.leg.as_str(),
        r.concurrency,
        r.calls,
        r.throughput(),
        r.p50,
        r.p99,
        r.p999,
        cpu.join(", "),
        r.upstream_gc.describe()
    );
}

// --- main -------------------------------------------------------------------------------------

fn main() -> anyhow::Result<()> {
    check_parser().context("the load generator's response parser")?;
    let settings = Settings::from_env()?;
    let rt = if settings.client_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(settings.client_threads)
            .enable_all()
            .build()?
    };
    rt.block_on(bench(settings))
}

async fn bench(s: Settings) -> anyhow::Result<()> {
    let t = Instant::now();
    let auth = Peer::start("as.mjs", &["--port", "0", "--access-ttl", "86400"])?;
    let issuer = auth.field("issuer")?;
    let cache = s.cache_ms.to_string();
    let node_flags: Vec<String> = s
        .upstream_semi_space_mb
        .map(|mb| format!("--max-semi-space-size={mb}"))
        .into_iter()
        .collect();
    let mcp = match s.upstream {
        Upstream::Node => Peer::start_with(
            &node_flags,
            "mcp-server.mjs",
            &[
                "--port",
                "0",
                "--issuer",
                &issuer,
                "--introspection-cache-ms",
                &cache,
            ],
        )?,
        Upstream::Rust => Peer::start_program(
            &echo_upstream()?,
            &[
                "--port",
                "0",
                "--issuer",
                &issuer,
                "--introspection-cache-ms",
                &cache,
            ],
        )?,
    };
    let mcp_url = mcp.field("url")?;
    let direct = Target::new(&mcp_url, &direct_token(&issuer, &mcp_url).await?, "echo")?;

    let data = tempfile::tempdir()?;
    // AGP_BENCH_SERVE_ARGS: extra `agp serve` arguments, e.g. `--archive-after 2m
    // --archive-min-age 1m` for a soak with retention.
    let extra = std::env::var("AGP_BENCH_SERVE_ARGS").unwrap_or_default();
    let mut serve_args = vec!["--egress-allow", "127.0.0.1/32"];
    serve_args.extend(extra.split_whitespace());
    // AGP_BENCH_DATABASE=postgres: AGP keeps its state in a PostgreSQL server the bench starts
    // (Debian's, default settings, loopback TCP) instead of the embedded store.
    let database = match std::env::var("AGP_BENCH_DATABASE").as_deref() {
        Ok("postgres") => {
            let pg = pg_server::TempPostgres::start().context("starting PostgreSQL")?;
            let url = pg.create_database("agp_bench")?;
            Some((pg, url))
        }
        Ok("") | Ok("embedded") | Err(_) => None,
        Ok(other) => anyhow::bail!("AGP_BENCH_DATABASE={other:?}: use postgres or embedded"),
    };
    // With a database the master key must be given (AGP never makes one up there).
    let key_file = data.path().join("bench-master.key");
    if let Some((_, url)) = &database {
        std::fs::write(&key_file, format!("{}\n", "5a".repeat(32)))?;
        serve_args.extend(["--database-url", url.as_str()]);
        serve_args.extend(["--master-key-file", key_file.to_str().context("key path")?]);
    }
    let agp = Agp::start(data.path(), &serve_args, &[], Duration::from_secs(60))?;
    let proxied = if s.legs.contains(&Leg::Proxied) {
        let key = agp_setup(&agp, &mcp_url, s.operation).await?;
        Some(Target::new(
            &format!("{}/mcp", agp.url()),
            &key,
            "bench__echo",
        )?)
    } else {
        None
    };
    // One checked call per leg before anything is measured; also shows how each side answers.
    let mut answers = Vec::new();
    for &leg in &s.legs {
        let t = match leg {
            Leg::Direct => &direct,
            Leg::Proxied => proxied.as_ref().context("the proxied leg was not set up")?,
        };
        let mut session = Session::open(t).await.with_context(|| match leg {
            Leg::Direct => "the direct leg: opening an MCP session at the upstream".to_string(),
            Leg::Proxied => "the proxied leg: opening an MCP session at AGP's /mcp (AGP_BENCH_LEGS=direct measures the direct leg alone)".to_string(),
        })?;
        let answer = session.call("probe").await?;
        session.close().await;
        answers.push(format!("{} answers {answer:?}", leg.as_str()));
    }
    let target = |leg: Leg| match leg {
        Leg::Direct => Ok(&direct),
        Leg::Proxied => proxied
            .as_ref()
            .ok_or_else(|| anyhow!("the proxied leg was not set up")),
    };
    eprintln!(
        "set-up {:.1} s: upstream {mcp_url} (introspection cache {} ms), AGP {}/mcp (ready {:.2} s after spawn); bench__echo is a {}; tools/call: {}",
        t.elapsed().as_secs_f64(),
        s.cache_ms,
        agp.url(),
        agp.start_to_ready.as_secs_f64(),
        s.operation,
        answers.join(", ")
    );
    let procs = Processes {
        names: vec!["client", "agp", "upstream", "as"],
        pids: vec![std::process::id(), agp.pid(), mcp.pid(), auth.pid()],
        ticks: clock_ticks(),
        upstream_admin: mcp.field("admin").ok(),
    };

    if s.soak_secs > 0 {
        let c = s.concurrency.iter().copied().max().unwrap_or(16);
        let proxied = proxied
            .as_ref()
            .context("soak mode needs the proxied leg")?;
        let storage = match &database {
            Some((pg, _)) => Storage::Database(pg),
            None => Storage::DataDir(agp.data_dir.clone()),
        };
        return soak(&s, &agp, proxied, c, &procs, &storage).await;
    }
    let head_before = log_head(&agp).await?;
    let mut proxied_calls = 0u64;
    if s.warmup_secs > 0 {
        eprintln!("warm-up ({} s per leg):", s.warmup_secs);
        let c = s.concurrency.iter().copied().max().unwrap_or(1);
        for &leg in &s.legs {
            let length = Duration::from_secs(s.warmup_secs);
            let slice = run_slice(target(leg)?, leg, c, length, &procs).await?;
            let r = Run::from_slices(leg, c, vec![slice]);
            if leg == Leg::Proxied {
                proxied_calls += r.calls;
            }
            print_run(&r, &procs);
        }
    }
    let mut runs: Vec<(u64, Run)> = Vec::new();
    for round in 0..s.rounds {
        eprintln!("round {}:", round + 1);
        for &c in &s.concurrency {
            // The legs take turns slice by slice, so both meet the same moments of the
            // machine; which goes first alternates.
            let slices = (s.secs * 1000).div_ceil(s.slice_ms);
            let mut taken: BTreeMap<Leg, Vec<Slice>> = BTreeMap::new();
            for k in 0..slices {
                let mut legs = s.legs.clone();
                if (round + k) % 2 == 1 {
                    legs.reverse();
                }
                for leg in legs {
                    let left = s.secs * 1000 - k * s.slice_ms;
                    let length = Duration::from_millis(s.slice_ms.min(left));
                    let slice = run_slice(target(leg)?, leg, c, length, &procs).await?;
                    taken.entry(leg).or_default().push(slice);
                }
            }
            for (leg, slices) in taken {
                let r = Run::from_slices(leg, c, slices);
                if leg == Leg::Proxied {
                    proxied_calls += r.calls;
                }
                print_run(&r, &procs);
                runs.push((round, r));
            }
        }
    }
    let head_after = log_head(&agp).await?;
    let appended = appended_types(&agp, head_before).await?;

    println!(
        "proxy benchmark: tools/call echo, {} rounds of {} s per leg and concurrency in turns of {} ms, medians; upstream introspection cache {} ms, young generation {}; load generator on {} thread(s)",
        s.rounds,
        s.secs,
        s.slice_ms,
        s.cache_ms,
        s.upstream_semi_space_mb.map_or_else(
            || "node's default".to_string(),
            |mb| format!("{mb} MiB semi-spaces")
        ),
        s.client_threads
    );
    let pick = |leg: Leg, c: usize| -> Vec<&Run> {
        runs.iter()
            .filter(|(_, r)| r.leg == leg && r.concurrency == c)
            .map(|(_, r)| r)
            .collect()
    };
    for &c in &s.concurrency {
        for &leg in &s.legs {
            let rs = pick(leg, c);
            let m = |f: fn(&Run) -> f64| median(rs.iter().map(|r| f(r)).collect());
            let cpu: Vec<String> = procs
                .names
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    format!(
                        "{n} {:.0}%",
                        100.0 * median(rs.iter().map(|r| r.cores[i]).collect())
                    )
                })
                .collect();
            let gc = rs
                .iter()
                .fold(GcCounts::default(), |sum, r| sum.add(r.upstream_gc));
            println!(
                "  c={c:<3} {:<7} {:>8.0} calls/s   p50 {:>7.0} µs   p99 {:>7.0} µs   p99.9 {:>7.0} µs   cpu {}; upstream: {}",
                leg.as_str(),
                m(Run::throughput),
                m(|r| r.p50),
                m(|r| r.p99),
                m(|r| r.p999),
                cpu.join(", "),
                gc.describe()
            );
        }
        if s.legs.len() == 2 {
            // Per-round differences and ratios (the legs of one round took turns).
            let (d, p) = (pick(Leg::Direct, c), pick(Leg::Proxied, c));
            let per_round =
                |f: fn(&Run, &Run) -> f64| median(d.iter().zip(&p).map(|(d, p)| f(d, p)).collect());
            println!(
                "  c={c:<3} added latency: p50 {:+.0} µs, p99 {:+.0} µs, p99.9 {:+.0} µs; throughput proxied/direct {:.1} %",
                per_round(|d, p| p.p50 - d.p50),
                per_round(|d, p| p.p99 - d.p99),
                per_round(|d, p| p.p999 - d.p999),
                100.0 * per_round(|d, p| p.throughput() / d.throughput()),
            );
        }
    }
    let types: Vec<String> = appended.iter().map(|(t, n)| format!("{t} ×{n}")).collect();
    println!(
        "  AGP log: head {head_before} → {head_after} (+{}) during {proxied_calls} proxied calls (warm-up included){}{}",
        head_after - head_before,
        if types.is_empty() { "" } else { ": " },
        types.join(", ")
    );
    println!(
        "  AGP resident memory after the runs {:.0} MiB (peak {:.0} MiB)",
        agp.rss_mib(),
        status_mib(agp.pid(), "VmHWM:")
    );
    if let Some(target) = proxied.as_ref().filter(|_| s.approvals > 0) {
        approval_latency(&agp, target, s.approvals).await?;
    }
    agp.stop()?;
    Ok(())
}

/// Issue 12: how long after a person's approval a held call goes upstream. `bench__echo` is held
/// by a per-tool rule; each call waits in its own session until the bench approves it through
/// the REST API. Reports AGP's own measure (`agp_tool_call_approval_to_upstream_seconds`: the
/// approval event's time to the call leaving for upstream) and the client's (the approve
/// request sent → the call's answer, which adds the approve round trip and upstream's answer).
/// Bytes of every file under `dir`.
fn dir_bytes(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Where AGP keeps its state, for the soak's size samples.
enum Storage<'a> {
    /// The embedded store: the data directory, its segments in `archive/`.
    DataDir(std::path::PathBuf),
    /// PostgreSQL: the size of AGP's tables (with their indexes and TOAST), the segments in
    /// `archive_segments` (WAL not counted).
    Database(&'a pg_server::TempPostgres),
}

impl Storage<'_> {
    /// Bytes of everything, and of the archive segments.
    fn bytes(&self) -> (u64, u64) {
        match self {
            Storage::DataDir(dir) => (dir_bytes(dir), dir_bytes(&dir.join("archive"))),
            Storage::Database(pg) => {
                let size = |sql: &str| {
                    pg.psql("agp_bench", sql)
                        .ok()
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .unwrap_or(0)
                };
                (
                    size(
                        "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                         FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = 'agp' AND c.relkind = 'r'",
                    ),
                    size("SELECT pg_total_relation_size('agp.archive_segments')"),
                )
            }
        }
    }
}

impl Storage<'_> {
    /// Bytes of the audit index, a projection the embedded store keeps beside the log (none
    /// on PostgreSQL, where each replica keeps it in its cache directory).
    fn audit_index_bytes(&self) -> Option<u64> {
        match self {
            Storage::DataDir(dir) => Some(dir_bytes(&dir.join("audit-index"))),
            Storage::Database(_) => None,
        }
    }
}

/// Soak mode: proxied `tools/call`s at concurrency `c` for `soak_secs`, in slices of
/// `soak_sample_secs`; after each slice, AGP's resident memory and the size of its storage
/// (the data directory, or its tables in PostgreSQL), then growth per call from the first
/// sample (taken after the warm-up) to the last.
async fn soak(
    s: &Settings,
    agp: &Agp,
    target: &Target,
    c: usize,
    procs: &Processes,
    storage: &Storage<'_>,
) -> anyhow::Result<()> {
    if s.warmup_secs > 0 {
        run_slice(
            target,
            Leg::Proxied,
            c,
            Duration::from_secs(s.warmup_secs),
            procs,
        )
        .await?;
    }
    if let Storage::Database(_) = storage {
        println!(
            "soak: storage is PostgreSQL: \"data dir\" below is AGP's tables with their indexes, \"archive\" the archive_segments table"
        );
    }
    let (first_bytes, first_archive) = storage.bytes();
    let first = (agp.rss_mib(), first_bytes);
    println!(
        "soak: tools/call through /mcp at concurrency {c} for {} s, sampled every {} s (after a {} s warm-up: rss {:.1} MiB, data dir {:.1} MiB)",
        s.soak_secs,
        s.soak_sample_secs,
        s.warmup_secs,
        first.0,
        first.1 as f64 / 1048576.0
    );
    println!(
        "  {:>6}  {:>10}  {:>8}  {:>9}  {:>12}  {:>11}  {:>9}  {:>9}",
        "secs",
        "calls",
        "calls/s",
        "rss MiB",
        "data dir MiB",
        "archive MiB",
        "audit MiB",
        "agp cpu"
    );
    let first_audit = storage.audit_index_bytes();
    let (mut calls, mut elapsed) = (0u64, 0u64);
    let mut last = first;
    let mut peak_rss = first.0;
    while elapsed < s.soak_secs {
        let length = s.soak_sample_secs.min(s.soak_secs - elapsed);
        let slice = run_slice(target, Leg::Proxied, c, Duration::from_secs(length), procs).await?;
        elapsed += length;
        let n = slice.latencies.len() as u64;
        calls += n;
        let (bytes, archived) = storage.bytes();
        last = (agp.rss_mib(), bytes);
        peak_rss = peak_rss.max(last.0);
        let agp_cpu = slice.cpu_secs.get(1).copied().unwrap_or(0.0);
        let audit = storage
            .audit_index_bytes()
            .map_or("-".to_string(), |b| format!("{:.1}", b as f64 / 1048576.0));
        println!(
            "  {elapsed:>6}  {calls:>10}  {:>8.0}  {:>9.1}  {:>12.1}  {:>11.1}  {audit:>9}  {:>7.0}µs",
            n as f64 / slice.secs,
            last.0,
            last.1 as f64 / 1048576.0,
            archived as f64 / 1048576.0,
            agp_cpu * 1e6 / n.max(1) as f64
        );
    }
    let calls_f = calls.max(1) as f64;
    println!(
        "soak summary: {calls} calls in {elapsed} s; rss {:.1} → {:.1} MiB ({:+.1}%, {:+.1} bytes per call, peak {:.1} MiB); data dir {:.1} → {:.1} MiB ({:+.0} bytes per call)",
        first.0,
        last.0,
        (last.0 - first.0) * 100.0 / first.0,
        (last.0 - first.0) * 1048576.0 / calls_f,
        peak_rss,
        first.1 as f64 / 1048576.0,
        last.1 as f64 / 1048576.0,
        (last.1 as f64 - first.1 as f64) / calls_f
    );
    if let (Some(a), Some(b)) = (first_audit, storage.audit_index_bytes()) {
        println!(
            "soak audit index: {:.1} → {:.1} MiB ({:+.0} bytes per call)",
            a as f64 / 1048576.0,
            b as f64 / 1048576.0,
            (b as f64 - a as f64) / calls_f
        );
    }
    let last_archive = storage.bytes().1;
    if last_archive > 0 {
        println!(
            "soak archive: segments {:.1} → {:.1} MiB ({:+.0} bytes per call); live data (data dir less segments) {:+.0} bytes per call",
            first_archive as f64 / 1048576.0,
            last_archive as f64 / 1048576.0,
            (last_archive as f64 - first_archive as f64) / calls_f,
            ((last.1 - last_archive) as f64 - (first.1 - first_archive) as f64) / calls_f
        );
    }
    Ok(())
}

async fn approval_latency(agp: &Agp, target: &Target, n: u64) -> anyhow::Result<()> {
    agp_cli(
        agp,
        &[
            "profiles",
            "policy",
            "--name",
            "bench",
            "--tool",
            "bench__echo=hold",
            "--reason",
            "bench",
        ],
    )?;
    let (http, token) = (reqwest::Client::new(), agp.admin_token()?);
    let api = |path: &str| format!("{}/api/v1{path}", agp.url());
    let mut client_ns = Vec::new();
    for i in 0..n {
        let mut session = Session::open(target).await?;
        let call = tokio::spawn(async move {
            let answer = session.call(&format!("held-{i}")).await;
            (answer, Instant::now())
        });
        let id = loop {
            let pending: Value = http
                .get(api("/approvals?status=pending"))
                .bearer_auth(&token)
                .send()
                .await?
                .json()
                .await?;
            if let Some(id) = pending[0]["id"].as_str() {
                break id.to_string();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let sent = Instant::now();
        let approved = http
            .post(api(&format!("/approvals/{id}/approve")))
            .bearer_auth(&token)
            .json(&json!({"reason": "bench"}))
            .send()
            .await?;
        ensure!(
            approved.status() == 200,
            "approve answered {}",
            approved.status()
        );
        let (answer, done) = call.await?;
        answer.context("the held call after its approval")?;
        client_ns.push(done.duration_since(sent).as_nanos() as u64);
    }
    agp_cli(
        agp,
        &[
            "profiles",
            "policy",
            "--name",
            "bench",
            "--clear-tool",
            "bench__echo",
            "--reason",
            "bench",
        ],
    )?;
    let metrics = reqwest::get(format!("{}/metrics", agp.url()))
        .await?
        .text()
        .await?;
    let metric = |suffix: &str| {
        metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "agp_tool_call_approval_to_upstream_seconds_{suffix}"
                ))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let (sum, count) = (metric("sum"), metric("count"));
    client_ns.sort_unstable();
    println!(
        "approvals: {n} held calls approved through the REST API; approval → upstream (AGP's \
         histogram) mean {:.0} µs over {count} calls; approve request sent → the agent's answer \
         p50 {:.0} µs, max {:.0} µs",
        1e6 * sum / count,
        quantile_us(&client_ns, 0.5),
        quantile_us(&client_ns, 1.0),
    );
    Ok(())
}
