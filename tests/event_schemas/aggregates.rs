//! Properties over arbitrary command sequences for every aggregate:
//! - every event a handler emits matches its schema and round-trips (the schemas describe what
//!   the rules actually let through, e.g. generation ≥ 1 once consent started, unique tools);
//! - replay = live state: folding the emitted events onto a fresh aggregate gives exactly the
//!   state the handler left, and a refused command leaves the state untouched.

use agp::domain::AgpEvent;
use agp::domain::agent::{Agent, AgentCommand};
use agp::domain::connector::{
    Connector, ConnectorCommand, Definition, DiscoveredMetadata, ObservedTool, Operation,
    Overrides, RegisteredTool, Registration, RevocationOutcome, TokenAuthMethod,
};
use agp::domain::profile::{Profile, ProfileCommand};
use chrono::DateTime;
use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use proptest::prelude::*;

use super::{check_event, samples};

/// Runs `commands` on a fresh aggregate as the command bus does; checks every emitted event
/// with `check` and that replaying the emitted events rebuilds the live state after each step.
fn run<A>(commands: Vec<A::Command>, check: impl Fn(&A::Event)) -> Result<(), TestCaseError>
where
    A: Aggregate<Services = ()> + Clone + PartialEq + std::fmt::Debug,
{
    let mut live = A::default();
    let mut log: Vec<A::Event> = Vec::new();
    for command in commands {
        let before = live.clone();
        let outcome = futures::executor::block_on(async {
            let sink = EventSink::<A>::default();
            live.handle(command, &(), &sink).await.map(|()| sink)
        });
        match outcome {
            Ok(sink) => {
                let events = futures::executor::block_on(sink.collect());
                events.iter().for_each(&check);
                log.extend(events);
            }
            Err(_) => prop_assert_eq!(&live, &before, "a refused command changed the state"),
        }
        let mut replayed = A::default();
        for e in log.iter().cloned() {
            replayed.apply(e);
        }
        prop_assert_eq!(&replayed, &live);
    }
    Ok(())
}

fn short_text() -> impl Strategy<Value = String> {
    prop_oneof![Just(String::new()), Just(" ".to_string()), "(?s).{1,8}"]
}

/// Mostly the generations a short history reaches, sometimes stale or future ones.
fn generation() -> impl Strategy<Value = u64> {
    prop_oneof![3 => 1u64..=2, 1 => 0u64..4]
}

fn connector_command() -> impl Strategy<Value = ConnectorCommand> {
    use ConnectorCommand as C;
    let add = (
        prop::sample::select(vec!["notion", "slack"]),
        short_text(),
        prop_oneof![
            Just(Registration::Dcr),
            short_text().prop_map(|client_id| Registration::Client {
                client_id,
                token_auth_method: TokenAuthMethod::ClientSecretPost,
                token_auth_method_reason: "set by the admin (--token-auth-method)".into(),
                client_secret_stored: true,
            }),
            Just(Registration::Cimd {
                client_id: "https://agp.example.com/.well-known/agp-client/c1".into(),
                token_auth_method: TokenAuthMethod::None,
                token_auth_method_reason: "a public client".into(),
            }),
        ],
    )
        .prop_map(|(name, url, registration)| C::Add {
            connector_id: "c1".into(),
            name: samples::name(name),
            mcp_server_url: url,
            client_name: String::new(),
            registration,
            registration_reason: Some("forced by the admin".into()),
            scopes: None,
            overrides: Overrides::default(),
        });
    let time = DateTime::from_timestamp(1_793_500_000, 0).expect("time");
    prop_oneof![
        1 => add,
        1 => Just(C::RecordDiscovery { metadata: DiscoveredMetadata::default() }),
        1 => short_text().prop_map(|client_id| C::RecordClientRegistration {
            issuer: "https://auth.example.com".into(),
            client_id,
            token_auth_method: TokenAuthMethod::ClientSecretBasic,
            token_auth_method_reason: "RFC 8414 default".into(),
            client_secret_stored: true,
            registration_access_token_stored: false,
        }),
        1 => Just(C::StartConsent {
            flow_id: "f".into(),
            requested_scopes: vec![],
            expires_at: time,
        }),
        1 => (generation(), short_text())
            .prop_map(|(generation, reason)| C::FailConsent { generation, reason }),
        3 => (generation(), any::<bool>()).prop_map(move |(generation, rt)| C::CompleteConsent {
            generation,
            granted_scopes: vec!["read".into()],
            account: None,
            account_source: None,
            token_fingerprint: "fp".into(),
            access_token_expires_at: Some(time),
            has_refresh_token: rt,
        }),
        2 => generation().prop_map(|generation| C::RecordRefresh {
            generation,
            token_fingerprint: "fp2".into(),
            access_token_expires_at: None,
            refresh_token_rotated: false,
        }),
        1 => generation().prop_map(|generation| C::RequireReauth {
            generation,
            reason: "invalid_grant".into(),
        }),
        1 => generation().prop_map(|generation| C::Expire { generation }),
        1 => generation().prop_map(|generation| C::Fail { generation, reason: "x".into() }),
        1 => Just(C::Disconnect { reason: "admin".into() }),
        1 => (generation(), prop::sample::select(vec!["refresh_token", "access_token", "id_token"]))
            .prop_map(|(generation, kind)| C::RecordRevocation {
                generation,
                token_kind: kind.into(),
                outcome: RevocationOutcome::Revoked,
                detail: None,
                next_attempt_at: None,
            }),
        1 => generation().prop_map(|generation| C::ShredCredentials { generation }),
        1 => prop::sample::select(vec!["notion", "slack", ""])
            .prop_map(|confirm| C::Remove { confirm: confirm.into() }),
        3 => (
            prop::sample::select(vec!["notion", "slack"]),
            prop::collection::vec((prop::sample::select(vec!["search", "fetch", "x.y"]), operation()), 0..3),
        )
            .prop_map(|(alias, tools)| {
                let alias = samples::name(alias);
                let tools = tools
                    .into_iter()
                    .map(|(upstream, operation)| {
                        RegisteredTool::new(
                            &alias,
                            upstream,
                            None,
                            "d",
                            serde_json::json!({"type": "object"}),
                            None,
                            operation,
                        )
                        .expect("valid tool")
                    })
                    .collect();
                C::RegisterTools { alias, tools }
            }),
        2 => (tool_names(), operation(), short_text()).prop_map(|(names, operation, reason)| {
            C::ChangeToolOperation {
                name: names.into_iter().next().unwrap_or_else(|| samples::tool("notion__search")),
                operation,
                reason,
            }
        }),
        2 => (tool_names(), short_text())
            .prop_map(|(names, reason)| C::UnregisterTools { names, reason }),
        3 => prop::collection::vec((tool_names(), definition()), 0..3).prop_map(|tools| {
            C::QuarantineTools {
                tools: tools
                    .into_iter()
                    .filter_map(|(names, definition)| {
                        names.into_iter().next().map(|name| ObservedTool { name, definition })
                    })
                    .collect(),
            }
        }),
        2 => (tool_names(), definition(), short_text()).prop_map(|(names, definition, reason)| {
            C::ApproveTool {
                name: names.into_iter().next().unwrap_or_else(|| samples::tool("notion__search")),
                definition,
                reason,
            }
        }),
    ]
}

/// Definitions near the ones `RegisterTools` records (description `d`, schema
/// `{"type":"object"}`), so quarantines, no-ops and approvals all happen; some with shapes
/// approval refuses.
fn definition() -> impl Strategy<Value = Definition> {
    use serde_json::json;
    (
        prop::option::of(Just("T".to_string())),
        prop::sample::select(vec!["d", "e"]),
        prop::sample::select(vec![
            json!({"type": "object"}),
            json!({"type": "object", "required": ["q"]}),
            json!("not an object"),
        ]),
        prop::option::of(prop::sample::select(vec![
            json!({"readOnlyHint": true}),
            json!([1]),
        ])),
    )
        .prop_map(
            |(title, description, input_schema, annotations)| Definition {
                title,
                description: description.into(),
                input_schema,
                annotations,
            },
        )
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![Just(Operation::Read), Just(Operation::Write)]
}

fn tool_names() -> impl Strategy<Value = Vec<agp::domain::ToolName>> {
    prop::collection::vec(
        prop::sample::select(vec!["notion__search", "notion__fetch", "slack__search"])
            .prop_map(samples::tool),
        0..3,
    )
}

fn tools() -> impl Strategy<Value = Vec<agp::domain::ToolName>> {
    prop::collection::vec(
        prop::sample::select(vec!["a__x", "a__y", "b__z"]).prop_map(samples::tool),
        0..4,
    )
}

fn profile_command() -> impl Strategy<Value = ProfileCommand> {
    use ProfileCommand as C;
    prop_oneof![
        1 => Just(C::Create {
            profile_id: "p1".into(),
            name: samples::name("support"),
            description: String::new(),
        }),
        4 => (tools(), short_text()).prop_map(|(tools, reason)| C::Grant { tools, reason }),
        3 => (tools(), short_text()).prop_map(|(tools, reason)| C::Revoke { tools, reason }),
        1 => short_text().prop_map(|reason| C::Suspend { reason }),
        1 => short_text().prop_map(|reason| C::Resume { reason }),
    ]
}

fn agent_command() -> impl Strategy<Value = AgentCommand> {
    use AgentCommand as C;
    let hash = prop_oneof!["[0-9a-f]{64}", "[0-9a-fA-F]{63,65}"];
    prop_oneof![
        (hash.clone()).prop_map(|key_hash| C::Create {
            agent_id: "a1".into(),
            name: samples::name("bot"),
            profile_id: "p1".into(),
            key_hash,
            key_prefix: "agp_".into(),
        }),
        hash.prop_map(|key_hash| C::RotateKey {
            key_hash,
            key_prefix: "agp_".into(),
        }),
        short_text().prop_map(|reason| C::Revoke { reason }),
    ]
}

proptest! {
    #[test]
    fn connector_commands_emit_valid_events_and_replay_to_the_live_state(
        first in connector_command(),
        commands in prop::collection::vec(connector_command(), 0..40)
    ) {
        // Mostly start with a valid add, so sequences get past `NotFound`.
        let add = ConnectorCommand::Add {
            registration_reason: None,
            connector_id: "c1".into(),
            name: samples::name("notion"),
            mcp_server_url: "https://mcp.notion.com/mcp".into(),
            client_name: String::new(),
            registration: Registration::Dcr,
            scopes: None,
            overrides: Overrides::default(),
        };
        let commands = [vec![add, first], commands].concat();
        run::<Connector>(commands, |e| check_event(&AgpEvent::Connector(e.clone())))?;
    }

    #[test]
    fn profile_commands_emit_valid_events_and_replay_to_the_live_state(
        commands in prop::collection::vec(profile_command(), 0..40)
    ) {
        run::<Profile>(commands, |e| check_event(&AgpEvent::Profile(e.clone())))?;
    }

    #[test]
    fn agent_commands_emit_valid_events_and_replay_to_the_live_state(
        commands in prop::collection::vec(agent_command(), 0..12)
    ) {
        run::<Agent>(commands, |e| check_event(&AgpEvent::Agent(e.clone())))?;
    }
}
