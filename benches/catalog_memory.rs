//! The memory report (`cargo bench --bench catalog_memory`, or `tools/bench-memory`): resident
//! memory of `agp serve` (release) with a large governed estate loaded, against an empty data
//! directory in the same run.
//!
//! The estate, written once through the real domain event types and cached under `AGP_BENCH_DIR`
//! (default `target/bench-data`):
//! - `AGP_BENCH_CONNECTORS` (default 1,000) connectors, each added, discovered, registered by
//!   DCR, consented and authorized (active), with `AGP_BENCH_TOOLS_PER_CONNECTOR` (default 100)
//!   registered tools: realistic definitions, input schemas of about 300–800 bytes and
//!   descriptions of about 100–300 bytes, each pinned by its definition hash;
//! - `AGP_BENCH_PROFILES` (default 1,000) profiles, each granted `AGP_BENCH_GRANTS` (default 20)
//!   of those tools;
//! - `AGP_BENCH_AGENTS` (default 10,000) agents spread over the profiles.
//!
//! Each of `AGP_BENCH_ROUNDS` (default 3) rounds starts `agp serve` on an empty data directory,
//! then on the estate, then on the estate again with `MIMALLOC_PURGE_DELAY=0` (freed memory goes
//! back to the system at once: what the loaded state itself occupies, without the rebuild's
//! garbage that mimalloc still holds), and reads its resident memory (`VmRSS`) and peak
//! (`VmHWM`) from `/proc` when `/readyz` first answers 200 and again after
//! `AGP_BENCH_SETTLE_SECS` (default 2) idle, plus the time from spawn to ready. The first round
//! checks the loaded state through the REST API (active connectors, registered tools, agents,
//! one profile's grants). Prints every round and the medians.

mod support;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agp::domain::agent::AgentEvent;
use agp::domain::connector::{
    ConnectorEvent, DiscoveredMetadata, Operation, Overrides, RegisteredTool, Registration,
    TokenAuthMethod,
};
use agp::domain::encode_event;
use agp::domain::profile::ProfileEvent;
use agp::domain::{ResourceName, ToolName};
use agp::store::{AppendBatch, EventLog, ExpectedVersion, NewEvent, SledLog, SledOptions};
use anyhow::{Context, ensure};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Agp, env_u64, median, status_mib};
use uuid::Uuid;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ADMIN: &str = "admin:1a2b3c4d";

/// The estate's size.
#[derive(Clone, Copy)]
struct Estate {
    connectors: u64,
    tools: u64,
    profiles: u64,
    grants: u64,
    agents: u64,
}

impl Estate {
    fn from_env() -> Estate {
        Estate {
            connectors: env_u64("AGP_BENCH_CONNECTORS", 1_000).max(1),
            tools: env_u64("AGP_BENCH_TOOLS_PER_CONNECTOR", 100).clamp(1, 100),
            profiles: env_u64("AGP_BENCH_PROFILES", 1_000).max(1),
            grants: env_u64("AGP_BENCH_GRANTS", 20).max(1),
            agents: env_u64("AGP_BENCH_AGENTS", 10_000),
        }
    }

    /// Events the estate's log holds: six per connector, two per profile, one per agent.
    fn events(&self) -> u64 {
        self.connectors * 6 + self.profiles * 2 + self.agents
    }

    /// Grants per profile: the asked number, at most what four connectors offer.
    fn grants_per_profile(&self) -> u64 {
        self.grants.min(self.connectors.min(4) * self.tools)
    }

    fn dir_name(&self) -> String {
        format!(
            "catalog-{}c-{}t-{}p-{}g-{}a",
            self.connectors, self.tools, self.profiles, self.grants, self.agents
        )
    }
}

/// A small deterministic generator (SplitMix64), so every fill writes the same estate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
}

const READ_VERBS: &[&str] = &["search", "list", "get", "read", "find"];
const WRITE_VERBS: &[&str] = &["create", "update", "delete", "archive", "move"];
const NOUNS: &[&str] = &[
    "pages", "issues", "channels", "files", "records", "comments", "users", "projects", "events",
    "invoices",
];
const PARAMS: &[&str] = &[
    "query",
    "page_id",
    "parent_id",
    "title",
    "body",
    "cursor",
    "limit",
    "filter",
    "sort",
    "workspace_id",
    "labels",
    "assignee",
    "due_date",
    "include_archived",
];
const PHRASES: &[&str] = &[
    "Results are ordered by last modification, newest first.",
    "Only items the authorized account can see are returned.",
    "Use the cursor from the previous response to page through long lists.",
    "Archived items are left out unless asked for.",
    "Rate limits of the upstream service apply; retry after the indicated delay.",
    "Identifiers are stable and can be stored.",
    "Text fields accept Markdown and are stored as rich text.",
    "The call fails if the parent does not exist or is not shared with the integration.",
];

/// The input schema of one tool: 2–6 typed parameters with descriptions (~300–800 bytes).
fn schema(rng: &mut Rng) -> Value {
    let count = 2 + rng.below(5) as usize;
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    while props.len() < count {
        let name = rng.pick(PARAMS);
        if props.contains_key(name) {
            continue;
        }
        let description = format!(
            "The {} to use. {}",
            name.replace('_', " "),
            rng.pick(PHRASES)
        );
        let prop = match name {
            "limit" => {
                json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 25, "description": description})
            }
            "include_archived" => {
                json!({"type": "boolean", "default": false, "description": description})
            }
            "labels" => {
                json!({"type": "array", "items": {"type": "string"}, "maxItems": 20, "description": description})
            }
            "sort" => {
                json!({"type": "string", "enum": ["created", "updated", "title"], "description": description})
            }
            _ => json!({"type": "string", "maxLength": 2000, "description": description}),
        };
        if required.len() < 2 && rng.below(2) == 0 {
            required.push(Value::String(name.to_string()));
        }
        props.insert(name.to_string(), prop);
    }
    json!({
        "type": "object",
        "properties": props,
        "required": required,
        "additionalProperties": false,
        "$schema": "http://json-schema.org/draft-07/schema#",
    })
}

/// The tools of connector `c`: `<verb>_<noun>` names, a third of them read-only.
fn tools(alias: &ResourceName, count: u64, rng: &mut Rng) -> anyhow::Result<Vec<RegisteredTool>> {
    let mut out = Vec::with_capacity(count as usize);
    let verbs: Vec<(&str, Operation)> = READ_VERBS
        .iter()
        .map(|v| (*v, Operation::Read))
        .chain(WRITE_VERBS.iter().map(|v| (*v, Operation::Write)))
        .collect();
    for i in 0..count {
        let (verb, operation) = verbs[(i % verbs.len() as u64) as usize];
        let noun = NOUNS[(i / verbs.len() as u64) as usize % NOUNS.len()];
        let upstream = format!("{verb}_{noun}");
        let mut description = format!(
            "{} {} in the connected workspace.",
            verb[..1].to_uppercase() + &verb[1..],
            noun
        );
        for _ in 0..1 + rng.below(4) {
            description.push(' ');
            description.push_str(rng.pick(PHRASES));
        }
        let annotations = match operation {
            Operation::Read => json!({"readOnlyHint": true, "openWorldHint": false}),
            Operation::Write => {
                json!({"readOnlyHint": false, "destructiveHint": verb == "delete", "openWorldHint": false})
            }
        };
        out.push(RegisteredTool::new(
            alias,
            &upstream,
            Some(format!("{} {}", verb, noun.replace('_', " "))),
            &description,
            schema(rng),
            Some(annotations),
            operation,
        )?);
    }
    Ok(out)
}

fn new_event<E: serde::Serialize>(e: &E) -> anyhow::Result<NewEvent> {
    let (event_type, data) = encode_event(e)?;
    Ok(NewEvent {
        id: Uuid::now_v7(),
        schema_version: agp::domain::upcast::current_version(&event_type),
        event_type,
        actor: ADMIN.to_string(),
        correlation_id: Uuid::now_v7(),
        data,
    })
}

fn hex_hash(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn connector_name(c: u64) -> String {
    format!("conn-{c:05}")
}

/// The estate's batches: every connector's lifecycle and registration as one append, then the
/// profiles with their grants, then the agents. Also returns the average schema and description
/// sizes in bytes.
fn plan(e: &Estate) -> anyhow::Result<(Vec<AppendBatch>, f64, f64)> {
    let mut rng = Rng(42);
    let mut batches = Vec::new();
    let mut names: Vec<Vec<ToolName>> = Vec::with_capacity(e.connectors as usize);
    let (mut schema_bytes, mut description_bytes, mut n) = (0usize, 0usize, 0usize);
    let now = chrono::Utc::now();
    for c in 0..e.connectors {
        let id = Uuid::now_v7().to_string();
        let name = ResourceName::parse(&connector_name(c))?;
        let host = format!("mcp-{c}.bench.example");
        let issuer = format!("https://auth-{c}.bench.example");
        let url = format!("https://{host}/mcp");
        let registered = tools(&name, e.tools, &mut rng)?;
        for t in &registered {
            schema_bytes += serde_json::to_vec(&t.input_schema)?.len();
            description_bytes += t.description.len();
            n += 1;
        }
        names.push(registered.iter().map(|t| t.name.clone()).collect());
        let events = [
            ConnectorEvent::Added {
                registration_reason: None,
                connector_id: id.clone(),
                name: name.clone(),
                mcp_server_url: url.clone(),
                client_name: format!("AGP {name}"),
                registration: Registration::Dcr,
                scopes: None,
                overrides: Overrides::default(),
            },
            ConnectorEvent::Discovered {
                metadata: DiscoveredMetadata {
                    resource_metadata_url: Some(format!(
                        "https://{host}/.well-known/oauth-protected-resource/mcp"
                    )),
                    resource: Some(url.clone()),
                    issuer: Some(issuer.clone()),
                    authorization_endpoint: Some(format!("{issuer}/authorize")),
                    token_endpoint: Some(format!("{issuer}/token")),
                    registration_endpoint: Some(format!("{issuer}/register")),
                    revocation_endpoint: Some(format!("{issuer}/revoke")),
                    scopes_supported: vec!["read".into(), "write".into()],
                    token_endpoint_auth_methods_supported: Some(vec![
                        "client_secret_basic".into(),
                        "client_secret_post".into(),
                    ]),
                    revocation_endpoint_auth_methods_supported: None,
                    steps: vec![
                        format!("401: {url} → resource_metadata"),
                        format!(
                            "prm: https://{host}/.well-known/oauth-protected-resource/mcp → 200"
                        ),
                        format!(
                            "rfc8414: https://auth-{c}.bench.example/.well-known/oauth-authorization-server → 200"
                        ),
                    ],
                },
            },
            ConnectorEvent::ClientRegistered {
                issuer: issuer.clone(),
                client_id: format!("dcr-{}", &hex_hash(&id)[..24]),
                token_auth_method: TokenAuthMethod::ClientSecretBasic,
                token_auth_method_reason: "the server's token_endpoint_auth_methods_supported \
                    is [client_secret_basic, client_secret_post]; AGP prefers client_secret_basic"
                    .into(),
                client_secret_stored: true,
                registration_access_token_stored: true,
            },
            ConnectorEvent::ConsentStarted {
                generation: 1,
                flow_id: hex_hash(&format!("flow-{id}")),
                requested_scopes: vec!["read".into(), "write".into()],
                expires_at: now + chrono::Duration::minutes(10),
            },
            // No known expiry: the background refresher leaves these connectors alone.
            ConnectorEvent::Authorized {
                generation: 1,
                granted_scopes: vec!["read".into(), "write".into()],
                account: None,
                account_source: None,
                token_fingerprint: hex_hash(&format!("token-{id}"))[..16].to_string(),
                access_token_expires_at: None,
                has_refresh_token: true,
            },
            ConnectorEvent::ToolsRegistered {
                alias: name.clone(),
                tools: registered,
            },
        ];
        batches.push(AppendBatch {
            stream: format!("connector-{id}"),
            expected: ExpectedVersion::NoStream,
            events: events.iter().map(new_event).collect::<Result<_, _>>()?,
        });
    }
    for p in 0..e.profiles {
        let mut granted = Vec::new();
        let mut seen = HashSet::new();
        let want = e.grants_per_profile() as usize;
        // A profile's tools come from a few connectors, the way a team uses a few services.
        let home = rng.below(e.connectors);
        while granted.len() < want {
            let c = (home + rng.below(4)) % e.connectors;
            let t = rng.below(e.tools) as usize;
            if seen.insert((c, t)) {
                granted.push(names[c as usize][t].clone());
            }
        }
        let events = vec![
            new_event(&ProfileEvent::Created {
                profile_id: format!("p{p}"),
                name: ResourceName::parse(&format!("profile-{p:05}"))?,
                description: "bench profile".into(),
                policy: agp::domain::profile::Policy::for_new_profile(),
            })?,
            new_event(&ProfileEvent::ToolsGranted {
                tools: granted,
                reason: "bench: the team's daily tools".into(),
            })?,
        ];
        batches.push(AppendBatch {
            stream: format!("profile-p{p}"),
            expected: ExpectedVersion::NoStream,
            events,
        });
    }
    for a in 0..e.agents {
        let key = format!("agp_{:064x}", rng.next());
        batches.push(AppendBatch {
            stream: format!("agent-a{a}"),
            expected: ExpectedVersion::NoStream,
            events: vec![new_event(&AgentEvent::Created {
                agent_id: format!("a{a}"),
                name: ResourceName::parse(&format!("agent-{a:05}"))?,
                profile_id: format!("p{}", a % e.profiles),
                key_hash: hex_hash(&key),
                key_prefix: key[..12].to_string(),
            })?],
        });
    }
    let n = n.max(1) as f64;
    Ok((
        batches,
        schema_bytes as f64 / n,
        description_bytes as f64 / n,
    ))
}

/// Writes the estate's log into `events_dir`, 64 appends (to distinct streams) at a time.
async fn fill(events_dir: &Path, e: &Estate) -> anyhow::Result<()> {
    let started = Instant::now();
    let (batches, schema, description) = plan(e)?;
    let log = Arc::new(SledLog::open(events_dir, SledOptions::default())?.0);
    let mut pending = batches.into_iter().peekable();
    while pending.peek().is_some() {
        let mut set = tokio::task::JoinSet::new();
        for b in pending.by_ref().take(64) {
            let log = log.clone();
            set.spawn(async move { log.append(b).await });
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    log.close().await?;
    eprintln!(
        "filled {} events in {:.1} s (tool input schemas {schema:.0} bytes, descriptions {description:.0} bytes on average)",
        e.events(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

const EMPTY: &str = "empty data dir";
const FULL: &str = "estate loaded";
const PURGED: &str = "estate, MIMALLOC_PURGE_DELAY=0";

/// One start: seconds to ready; resident and peak memory (MiB) at ready; resident memory once
/// idle for `settle`.
struct Start {
    secs: f64,
    rss: f64,
    peak: f64,
    settled: f64,
}

fn start(data_dir: &Path, env: &[(&str, &str)], settle: Duration) -> anyhow::Result<(Agp, Start)> {
    let agp = Agp::start(data_dir, &[], env, Duration::from_secs(300))?;
    let (secs, rss, peak) = (
        agp.start_to_ready.as_secs_f64(),
        agp.rss_mib(),
        status_mib(agp.pid(), "VmHWM:"),
    );
    std::thread::sleep(settle);
    let settled = agp.rss_mib();
    Ok((
        agp,
        Start {
            secs,
            rss,
            peak,
            settled,
        },
    ))
}

fn show(what: &str, s: &Start) -> String {
    format!(
        "{what:<30} ready {:>6.2} s   rss {:>6.0} MiB   peak {:>6.0} MiB   rss when idle {:>6.0} MiB",
        s.secs, s.rss, s.peak, s.settled
    )
}

/// The loaded state, through the REST API: every connector active, every tool in the catalog,
/// every agent, and one profile's grants.
async fn check(agp: &Agp, e: &Estate) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let token = agp.admin_token()?;
    let get = |path: String| {
        let req = http
            .get(format!("{}/api/v1{path}", agp.url()))
            .bearer_auth(&token);
        async move {
            anyhow::Ok(
                req.send()
                    .await?
                    .error_for_status()?
                    .json::<Value>()
                    .await?,
            )
        }
    };
    let len = |v: &Value| v.as_array().map_or(0, Vec::len) as u64;
    let connectors = get("/connectors?status=active".into()).await?;
    ensure!(
        len(&connectors) == e.connectors,
        "{} active connectors, expected {}",
        len(&connectors),
        e.connectors
    );
    let tools = get("/tools?status=active".into()).await?;
    ensure!(
        len(&tools) == e.connectors * e.tools,
        "{} active tools, expected {}",
        len(&tools),
        e.connectors * e.tools
    );
    let one = get(format!(
        "/tools?connector={}",
        connector_name(e.connectors / 2)
    ))
    .await?;
    ensure!(len(&one) == e.tools, "connector tools: {}", len(&one));
    let agents = get("/agents".into()).await?;
    ensure!(
        len(&agents) == e.agents,
        "{} agents, expected {}",
        len(&agents),
        e.agents
    );
    let profile = get(format!("/profiles/profile-{:05}", e.profiles / 2)).await?;
    let grants = profile["grants"].as_object().map_or(0, |g| g.len()) as u64;
    ensure!(grants == e.grants_per_profile(), "profile grants: {grants}");
    eprintln!(
        "checked through the API: {} active connectors, {} active tools ({} for one connector), {} agents, {grants} grants on one profile",
        len(&connectors),
        len(&tools),
        len(&one),
        len(&agents)
    );
    Ok(())
}

/// Issue 13: how long the console's pages take on the estate, seen from a client on loopback
/// (an upper bound of the server-side render), against `/healthz` in the same run.
async fn console_timing(agp: &Agp) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let link: Value = http
        .post(format!("{}/api/v1/console/link", agp.url()))
        .bearer_auth(agp.admin_token()?)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let signed = http
        .get(link["url"].as_str().context("no link")?)
        .send()
        .await?;
    let cookie = signed
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .context("no session cookie")?
        .to_string();
    const N: usize = 15;
    for path in [
        "/healthz",
        "/console/connectors",
        "/console/tools",
        "/console/profiles",
        "/console/agents",
        // A page deep in the catalog, a filter that scans all of it, the last page of agents.
        "/console/tools?after=conn-00900__",
        "/console/tools?q=zzz-matches-nothing",
        "/console/agents?after=agent-09900",
        "/console/approvals",
        "/console/audit",
    ] {
        let mut ms = Vec::with_capacity(N);
        let mut bytes = 0;
        for _ in 0..N {
            let t = std::time::Instant::now();
            let r = http
                .get(format!("{}{path}", agp.url()))
                .header("cookie", &cookie)
                .send()
                .await?
                .error_for_status()?;
            bytes = r.bytes().await?.len();
            ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        ms.sort_by(f64::total_cmp);
        println!(
            "  console {path:<38} p50 {:7.2} ms  max {:7.2} ms  ({} KiB)",
            ms[N / 2],
            ms[N - 1],
            bytes / 1024
        );
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let e = Estate::from_env();
    let rounds = env_u64("AGP_BENCH_ROUNDS", 3).max(1);
    let root = std::env::var("AGP_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data"));
    let data_dir = root.join(e.dir_name());
    let events_dir = data_dir.join("events");
    let cached = SledLog::open_read_only(&events_dir)
        .map(|(log, _)| log.head() == e.events())
        .unwrap_or(false);
    if !cached {
        let _ = std::fs::remove_dir_all(&data_dir);
        std::fs::create_dir_all(&data_dir)?;
        fill(&events_dir, &e).await.context("filling the log")?;
    }

    let settle = Duration::from_secs(env_u64("AGP_BENCH_SETTLE_SECS", 2));
    // mimalloc keeps pages freed by the start-up rebuild for a while; how many are still held at
    // ready varies from start to start. MIMALLOC_PURGE_DELAY=0 returns them at once, which shows
    // what the loaded state itself occupies.
    let purge = [("MIMALLOC_PURGE_DELAY", "0")];
    let (mut empty, mut full, mut purged) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let scratch = tempfile::tempdir()?;
        let (agp, s) = start(scratch.path(), &[], settle)?;
        agp.stop()?;
        eprintln!("round {}: {}", round + 1, show(EMPTY, &s));
        empty.push(s);
        let (agp, s) = start(&data_dir, &[], settle)?;
        eprintln!("round {}: {}", round + 1, show(FULL, &s));
        full.push(s);
        if round == 0 {
            check(&agp, &e).await?;
            console_timing(&agp).await?;
        }
        agp.stop()?;
        let (agp, s) = start(&data_dir, &purge, settle)?;
        eprintln!("round {}: {}", round + 1, show(PURGED, &s));
        purged.push(s);
        agp.stop()?;
    }
    let m = |v: &[Start]| Start {
        secs: median(v.iter().map(|s| s.secs).collect()),
        rss: median(v.iter().map(|s| s.rss).collect()),
        peak: median(v.iter().map(|s| s.peak).collect()),
        settled: median(v.iter().map(|s| s.settled).collect()),
    };
    let (empty, full, purged) = (m(&empty), m(&full), m(&purged));
    println!(
        "memory report: {} connectors, {} registered tools, {} profiles × {} grants, {} agents ({} events); {rounds} rounds, medians; idle = {} s after ready",
        e.connectors,
        e.connectors * e.tools,
        e.profiles,
        e.grants_per_profile(),
        e.agents,
        e.events(),
        settle.as_secs()
    );
    println!("  {}", show(EMPTY, &empty));
    println!("  {}", show(FULL, &full));
    println!("  {}", show(PURGED, &purged));
    let per_tool = |mib: f64| mib * 1024.0 / (e.connectors * e.tools) as f64;
    println!(
        "  the estate costs {:+.0} MiB resident at ready over the empty baseline ({:.1} KiB per registered tool, everything included); {:+.0} MiB ({:.1} KiB per tool) with freed pages returned",
        full.rss - empty.rss,
        per_tool(full.rss - empty.rss),
        purged.rss - empty.rss,
        per_tool(purged.rss - empty.rss)
    );
    Ok(())
}
