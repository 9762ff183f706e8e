//! The zstd dictionary of the log's group codec 1 (`src/store/sled_log/dict-v1.bin`,
//! decision 0018): how it was made, kept so the next codec's dictionary can be made the same
//! way. It is raw content (no training): sample records of the common kinds, encoded as group
//! bodies, least common first (zstd reaches the end of a dictionary with the shortest
//! offsets). Codec 1's dictionary is frozen; this writes `dict-vN.bin` for a new codec only.
//!
//! `AGP_WRITE_DICT=dict-v2.bin cargo test --test store dictionary -- --ignored`

use agp::domain::agent::AgentEvent;
use agp::domain::call::{CallEvent, CallOutcome, Decision, DenyReason};
use agp::domain::connector::Operation;
use agp::domain::profile::{Policy, ProfileEvent};
use agp::domain::{ResourceName, ToolName, encode_event};
use agp::store::sled_log::group::Encoder;
use agp::store::{GENESIS_HASH, RecordedEvent, compute_hash};
use uuid::Uuid;

fn id(n: u128) -> String {
    // Version-7-shaped ids of late 2026, so the dictionary holds their common prefix.
    Uuid::from_u128((0x019a_c3e1_7b2c_7000_8000_0000_0000_0000u128) | n).to_string()
}

fn tool(n: u32) -> ToolName {
    ToolName::parse(&format!("notion__search_pages{n}")).expect("tool name")
}

#[test]
#[ignore = "writes a new dictionary file; codec 1's is frozen"]
fn write_dictionary() {
    let Ok(name) = std::env::var("AGP_WRITE_DICT") else {
        return;
    };
    let agent = id(1);
    let profile = id(2);
    let connector = id(3);
    let mut events: Vec<(String, String, serde_json::Value)> = Vec::new();
    let mut push = |stream: String, actor: &str, e: Result<(String, serde_json::Value), _>| {
        let (t, d) = e.expect("encode");
        events.push((stream, format!("{actor}|{t}"), d));
    };
    let admin = "admin:1a2b3c4d5e6f7a8b";
    push(
        format!("profile-{profile}"),
        admin,
        encode_event(&ProfileEvent::Created {
            profile_id: profile.clone(),
            name: ResourceName::parse("support-readonly").expect("name"),
            description: "Support agents: read-only tools".into(),
            policy: Policy::for_new_profile(),
        }),
    );
    push(
        format!("profile-{profile}"),
        admin,
        encode_event(&ProfileEvent::ToolsGranted {
            tools: vec![tool(1)],
            reason: "ticket triage".into(),
        }),
    );
    push(
        format!("agent-{agent}"),
        admin,
        encode_event(&AgentEvent::Created {
            agent_id: agent.clone(),
            name: ResourceName::parse("support-triage-bot").expect("name"),
            profile_id: profile.clone(),
            key_hash: "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08".into(),
            key_prefix: "agp_1a2b3c4d".into(),
        }),
    );
    let actor = format!("agent:{agent}");
    let calls = format!("calls-{agent}");
    push(
        calls.clone(),
        &actor,
        encode_event(&CallEvent::Denied {
            call_id: id(9),
            agent_id: agent.clone(),
            agent: "support-triage-bot".into(),
            profile_id: profile.clone(),
            profile: "support-readonly".into(),
            tool: Some(tool(2)),
            connector_id: Some(connector.clone()),
            connector: Some("notion".into()),
            operation: Some(Operation::Write),
            decision: Decision::Deny,
            reason: DenyReason::NotGranted,
            connector_status: None,
            arguments_sha256: "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"
                .into(),
            approval_id: None,
        }),
    );
    for n in 0..2u32 {
        push(
            calls.clone(),
            &actor,
            encode_event(&CallEvent::Completed {
                call_id: id(10 + u128::from(n)),
                agent_id: agent.clone(),
                tool: tool(n),
                connector_id: connector.clone(),
                outcome: CallOutcome::Ok,
                latency_us: 1834,
                result_bytes: 2210,
                attempts: 1,
                refreshed: false,
                redactions: 0,
                approval_id: None,
                reason: None,
            }),
        );
        push(
            calls.clone(),
            &actor,
            encode_event(&CallEvent::Started {
                call_id: id(20 + u128::from(n)),
                agent_id: agent.clone(),
                agent: "support-triage-bot".into(),
                profile_id: profile.clone(),
                profile: "support-readonly".into(),
                tool: tool(n),
                connector_id: connector.clone(),
                connector: "notion".into(),
                operation: Operation::Read,
                decision: Decision::Allow,
                arguments_sha256:
                    "fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9".into(),
                arguments_bytes: 87,
                approval_id: None,
            }),
        );
    }
    let records: Vec<_> = events
        .into_iter()
        .enumerate()
        .map(|(i, (stream, actor_type, data))| {
            let (actor, event_type) = actor_type.split_once('|').expect("pair");
            let mut r = RecordedEvent {
                seq: i as u64 + 1,
                stream,
                version: 1,
                id: Uuid::parse_str(&id(100 + i as u128)).expect("uuid"),
                event_type: event_type.to_string(),
                schema_version: 1,
                time: chrono::DateTime::from_timestamp_micros(1_795_000_000_000_000).expect("time"),
                actor: actor.to_string(),
                correlation_id: Uuid::parse_str(&id(200 + i as u128)).expect("uuid"),
                data,
                prev_hash: GENESIS_HASH.to_string(),
                hash: String::new(),
            };
            r.hash = compute_hash(&r);
            r
        })
        .collect();
    let mut dict = Vec::new();
    for r in records {
        let value = Encoder::new(false)
            .expect("encoder")
            .encode(std::slice::from_ref(&r))
            .expect("encode");
        dict.extend_from_slice(&value);
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/sled_log")
        .join(&name);
    std::fs::write(&path, &dict).expect("write");
    use sha2::Digest;
    std::fs::write(
        path.with_extension("sha256"),
        format!("{}\n", hex::encode(sha2::Sha256::digest(&dict))),
    )
    .expect("write");
    eprintln!("wrote {} bytes to {}", dict.len(), path.display());
}
