//! proptest strategies for every event variant: any value the domain can emit, optional fields
//! present and absent, names at the edges of their patterns.

use agp::domain::agent::AgentEvent;
use agp::domain::approval::ApprovalEvent;
use agp::domain::call::{CallEvent, CallOutcome, Decision, DenyReason};
use agp::domain::connector::{
    AccountSource, ConnectorEvent, Definition, DiscoveredMetadata, Operation, Overrides,
    RegisteredTool, Registration, RevocationOutcome, TOKEN_KINDS, TokenAuthMethod,
};
use agp::domain::profile::{Policy, ProfileEvent, Rule};
use agp::domain::{AgpEvent, ResourceName, ToolName};
use chrono::{DateTime, Utc};
use proptest::option;
use proptest::prelude::*;
use serde_json::Value;

/// Any text, control characters and non-ASCII included.
fn text() -> impl Strategy<Value = String> {
    "(?s).{0,24}"
}

/// Text with at least one non-whitespace character (what `reason.trim().is_empty()` lets through).
fn non_blank() -> impl Strategy<Value = String> {
    text().prop_filter("non-blank", |s| !s.trim().is_empty())
}

fn texts() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(text(), 0..4)
}

fn time() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..4_102_444_800, 0u32..1_000_000_000)
        .prop_map(|(s, n)| DateTime::from_timestamp(s, n).expect("timestamp in range"))
}

fn resource_name() -> impl Strategy<Value = ResourceName> {
    "[a-z0-9][a-z0-9_-]{0,62}".prop_filter_map("no `__`", |s| ResourceName::parse(&s).ok())
}

fn tool_name() -> impl Strategy<Value = ToolName> {
    "[A-Za-z0-9._-]{1,128}".prop_map(|s| ToolName::parse(&s).expect("matches the pattern"))
}

/// A non-empty set of distinct tools, as grants and revocations record them.
fn tools() -> impl Strategy<Value = Vec<ToolName>> {
    prop::collection::btree_set(tool_name(), 1..5).prop_map(|s| s.into_iter().collect())
}

fn operation() -> impl Strategy<Value = Operation> {
    prop_oneof![Just(Operation::Read), Just(Operation::Write)]
}

/// Any JSON value without floats (serde_json's default float parsing is not exact).
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(text(), json_value(), 0..4)
        .prop_map(|m| Value::Object(m.into_iter().collect()))
}

/// A tool as the rules let it through: named `<alias>__<upstream>`, hash matching.
fn registered_tool(alias: ResourceName) -> impl Strategy<Value = RegisteredTool> {
    (
        "[A-Za-z0-9._-]{1,40}",
        option::of(text()),
        text(),
        json_object(),
        option::of(json_object()),
        operation(),
    )
        .prop_map(
            move |(upstream, title, description, schema, annotations, operation)| {
                RegisteredTool::new(
                    &alias,
                    &upstream,
                    title,
                    &description,
                    schema,
                    annotations,
                    operation,
                )
                .expect("alias__upstream is a valid tool name")
            },
        )
}

/// `connector.tools_registered`: distinct tools under one alias.
fn tools_registered() -> impl Strategy<Value = ConnectorEvent> {
    resource_name().prop_flat_map(|alias| {
        prop::collection::vec(registered_tool(alias.clone()), 1..4).prop_map(move |mut tools| {
            tools.sort_by(|a, b| a.name.cmp(&b.name));
            tools.dedup_by(|a, b| a.name == b.name);
            ConnectorEvent::ToolsRegistered {
                alias: alias.clone(),
                tools,
            }
        })
    })
}

/// A definition as the rules let one through approval: object schema and annotations.
fn definition() -> impl Strategy<Value = Definition> {
    (
        option::of(text()),
        text(),
        json_object(),
        option::of(json_object()),
    )
        .prop_map(
            |(title, description, input_schema, annotations)| Definition {
                title,
                description,
                input_schema,
                annotations,
            },
        )
}

/// `connector.tool_quarantined`: the domain's diff of two different definitions (the observed
/// one possibly bounded: any JSON where the pinned one had an object).
fn tool_quarantined() -> impl Strategy<Value = ConnectorEvent> {
    let observed = (
        definition(),
        option::of(json_value().prop_filter("not null", |v| !v.is_null())),
    )
        .prop_map(|(mut d, bounded)| {
            if let Some(v) = bounded {
                d.input_schema = v;
            }
            d
        });
    (tool_name(), "[a-z]{1,8}", definition(), observed).prop_filter_map(
        "definitions differ",
        |(name, upstream, pinned, observed)| {
            let changes = agp::domain::connector::hashed(&pinned.changes(&observed));
            (!changes.is_empty()).then(|| ConnectorEvent::ToolQuarantined {
                name,
                pinned_hash: pinned.hash(&upstream),
                observed_hash: observed.hash(&upstream),
                changes,
            })
        },
    )
}

/// `connector.tool_approved` pinning an arbitrary valid definition.
fn tool_approved() -> impl Strategy<Value = ConnectorEvent> {
    (
        tool_name(),
        "[a-z]{1,8}",
        non_blank(),
        key_hash(),
        definition(),
    )
        .prop_map(
            |(name, upstream, reason, previous_hash, d)| ConnectorEvent::ToolApproved {
                name,
                reason,
                previous_hash,
                definition_hash: d.hash(&upstream),
                title: d.title,
                description: d.description,
                input_schema: d.input_schema,
                annotations: d.annotations,
            },
        )
}

fn key_hash() -> impl Strategy<Value = String> {
    "[0-9a-f]{64}"
}

fn token_auth_method() -> impl Strategy<Value = TokenAuthMethod> {
    prop_oneof![
        Just(TokenAuthMethod::ClientSecretBasic),
        Just(TokenAuthMethod::ClientSecretPost),
        Just(TokenAuthMethod::None),
    ]
}

/// An account and where it came from: a source only ever comes with an account.
fn account() -> impl Strategy<Value = (Option<String>, Option<AccountSource>)> {
    let source = prop_oneof![
        Just(AccountSource::IdToken),
        Just(AccountSource::Userinfo),
        Just(AccountSource::TokenResponse),
    ];
    option::of((text(), source)).prop_map(|a| match a {
        Some((account, source)) => (Some(account), Some(source)),
        None => (None, None),
    })
}

fn registration() -> impl Strategy<Value = Registration> {
    prop_oneof![
        Just(Registration::Dcr),
        (text(), token_auth_method(), non_blank(), any::<bool>()).prop_filter_map(
            "client id required",
            |(client_id, token_auth_method, token_auth_method_reason, client_secret_stored)| {
                (!client_id.is_empty()).then_some(Registration::Client {
                    client_id,
                    token_auth_method,
                    token_auth_method_reason,
                    client_secret_stored,
                })
            }
        ),
        ("[a-z0-9-]{1,12}", non_blank()).prop_map(|(id, token_auth_method_reason)| {
            Registration::Cimd {
                client_id: format!("https://agp.example.com/.well-known/agp-client/{id}"),
                token_auth_method: TokenAuthMethod::None,
                token_auth_method_reason,
            }
        }),
    ]
}

fn overrides() -> impl Strategy<Value = Overrides> {
    (
        (option::of(text()), option::of(text()), any::<bool>()),
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
        ),
        proptest::collection::btree_map("[A-Za-z0-9._~-]{1,64}", "[^\\p{Cc}]{0,40}", 0..4),
    )
        .prop_map(
            |(
                (audience, resource, omit_resource),
                (
                    issuer,
                    authorization_endpoint,
                    token_endpoint,
                    registration_endpoint,
                    revocation_endpoint,
                ),
                authorize_params,
            )| Overrides {
                audience,
                resource,
                omit_resource,
                issuer,
                authorization_endpoint,
                token_endpoint,
                registration_endpoint,
                revocation_endpoint,
                authorize_params: authorize_params
                    .into_iter()
                    .filter(|(k, _)| {
                        !agp::domain::connector::RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str())
                    })
                    .collect(),
            },
        )
}

fn metadata() -> impl Strategy<Value = DiscoveredMetadata> {
    (
        (
            option::of(text()),
            option::of(text()),
            option::of(text()),
            option::of(text()),
        ),
        (option::of(text()), option::of(text()), option::of(text())),
        (texts(), texts(), auth_methods(), auth_methods()),
    )
        .prop_map(
            |(
                (resource_metadata_url, resource, issuer, authorization_endpoint),
                (token_endpoint, registration_endpoint, revocation_endpoint),
                (
                    scopes_supported,
                    steps,
                    token_endpoint_auth_methods_supported,
                    revocation_endpoint_auth_methods_supported,
                ),
            )| DiscoveredMetadata {
                resource_metadata_url,
                resource,
                issuer,
                authorization_endpoint,
                token_endpoint,
                registration_endpoint,
                revocation_endpoint,
                scopes_supported,
                token_endpoint_auth_methods_supported,
                revocation_endpoint_auth_methods_supported,
                steps,
            },
        )
}

/// An AS metadata list of auth methods as recorded: absent, or 1–16 non-empty names.
fn auth_methods() -> impl Strategy<Value = Option<Vec<String>>> {
    option::of(prop::collection::vec(non_blank(), 1..4))
}

fn outcome() -> impl Strategy<Value = RevocationOutcome> {
    prop_oneof![
        Just(RevocationOutcome::Revoked),
        Just(RevocationOutcome::Failed),
        Just(RevocationOutcome::NoEndpoint),
        Just(RevocationOutcome::NothingToRevoke),
    ]
}

/// A generation after at least one consent started.
fn started_generation() -> impl Strategy<Value = u64> {
    prop_oneof![1u64..=3, 1u64..=u64::MAX]
}

fn any_generation() -> impl Strategy<Value = u64> {
    prop_oneof![0u64..=3, any::<u64>()]
}

pub fn connector_event() -> impl Strategy<Value = ConnectorEvent> {
    use ConnectorEvent as E;
    prop_oneof![
        (
            text(),
            resource_name(),
            non_blank(),
            text(),
            (registration(), option::of(non_blank())),
            option::of(texts()),
            overrides()
        )
            .prop_map(
                |(
                    connector_id,
                    name,
                    mcp_server_url,
                    client_name,
                    (registration, registration_reason),
                    scopes,
                    overrides,
                )| E::Added {
                    connector_id,
                    name,
                    mcp_server_url,
                    client_name,
                    registration,
                    registration_reason,
                    scopes,
                    overrides,
                }
            ),
        metadata().prop_map(|metadata| E::Discovered { metadata }),
        (
            text(),
            text().prop_filter("client id required", |s| !s.is_empty()),
            token_auth_method(),
            (any::<bool>(), non_blank()),
            any::<bool>()
        )
            .prop_map(
                |(
                    issuer,
                    client_id,
                    token_auth_method,
                    (client_secret_stored, token_auth_method_reason),
                    registration_access_token_stored,
                )| E::ClientRegistered {
                    issuer,
                    client_id,
                    token_auth_method,
                    token_auth_method_reason,
                    client_secret_stored,
                    registration_access_token_stored,
                }
            ),
        (started_generation(), text(), texts(), time()).prop_map(
            |(generation, flow_id, requested_scopes, expires_at)| E::ConsentStarted {
                generation,
                flow_id,
                requested_scopes,
                expires_at,
            }
        ),
        (started_generation(), text())
            .prop_map(|(generation, reason)| E::ConsentFailed { generation, reason }),
        (
            started_generation(),
            texts(),
            account(),
            text(),
            option::of(time()),
            any::<bool>()
        )
            .prop_map(
                |(
                    generation,
                    granted_scopes,
                    (account, account_source),
                    token_fingerprint,
                    access_token_expires_at,
                    has_refresh_token,
                )| E::Authorized {
                    generation,
                    granted_scopes,
                    account,
                    account_source,
                    token_fingerprint,
                    access_token_expires_at,
                    has_refresh_token,
                }
            ),
        (
            started_generation(),
            text(),
            option::of(time()),
            any::<bool>()
        )
            .prop_map(
                |(
                    generation,
                    token_fingerprint,
                    access_token_expires_at,
                    refresh_token_rotated,
                )| {
                    E::TokenRefreshed {
                        generation,
                        token_fingerprint,
                        access_token_expires_at,
                        refresh_token_rotated,
                    }
                }
            ),
        (started_generation(), text())
            .prop_map(|(generation, reason)| E::ReauthRequired { generation, reason }),
        started_generation().prop_map(|generation| E::Expired { generation }),
        (any_generation(), text())
            .prop_map(|(generation, reason)| E::Failed { generation, reason }),
        (any_generation(), text())
            .prop_map(|(generation, reason)| E::Disconnected { generation, reason }),
        (
            any_generation(),
            prop::sample::select(TOKEN_KINDS),
            outcome(),
            option::of(text()),
            option::of(time())
        )
            .prop_map(
                |(generation, kind, outcome, detail, next)| E::RevocationRecorded {
                    generation,
                    token_kind: kind.to_string(),
                    outcome,
                    detail,
                    next_attempt_at: next.filter(|_| outcome == RevocationOutcome::Failed),
                }
            ),
        (
            any_generation(),
            prop::sample::select(TOKEN_KINDS),
            prop_oneof![
                Just(agp::domain::connector::AbandonReason::TokenInvalid),
                Just(agp::domain::connector::AbandonReason::UnsupportedTokenType),
                Just(agp::domain::connector::AbandonReason::TokenMissing),
            ],
            option::of(text())
        )
            .prop_map(
                |(generation, kind, reason, detail)| E::RevocationAbandoned {
                    generation,
                    token_kind: kind.to_string(),
                    reason,
                    detail,
                }
            ),
        any_generation().prop_map(|generation| E::CredentialsShredded { generation }),
        resource_name().prop_map(|name| E::Removed { name }),
        tools_registered(),
        (tool_name(), operation(), non_blank()).prop_map(|(name, operation, reason)| {
            E::ToolOperationChanged {
                name,
                operation,
                reason,
            }
        }),
        (tools(), non_blank()).prop_map(|(names, reason)| E::ToolsUnregistered { names, reason }),
        tool_quarantined(),
        tool_approved(),
    ]
}

pub fn profile_event() -> impl Strategy<Value = ProfileEvent> {
    use ProfileEvent as E;
    prop_oneof![
        (text(), resource_name(), text(), policy()).prop_map(
            |(profile_id, name, description, policy)| {
                E::Created {
                    profile_id,
                    name,
                    description,
                    policy,
                }
            }
        ),
        (policy(), non_blank()).prop_map(|(policy, reason)| E::PolicyChanged { policy, reason }),
        (tools(), non_blank()).prop_map(|(tools, reason)| E::ToolsGranted { tools, reason }),
        (tools(), non_blank()).prop_map(|(tools, reason)| E::ToolsRevoked { tools, reason }),
        non_blank().prop_map(|reason| E::Suspended { reason }),
        non_blank().prop_map(|reason| E::Resumed { reason }),
    ]
}

fn rule() -> impl Strategy<Value = Rule> {
    prop::sample::select(vec![Rule::Allow, Rule::Hold, Rule::Deny])
}

fn policy() -> impl Strategy<Value = Policy> {
    (
        rule(),
        rule(),
        prop::collection::btree_map(tool_name(), rule(), 0..3),
        any::<u32>(),
    )
        .prop_map(|(read, write, tools, max_calls_per_minute)| Policy {
            read,
            write,
            tools,
            max_calls_per_minute,
        })
}

pub fn agent_event() -> impl Strategy<Value = AgentEvent> {
    use AgentEvent as E;
    prop_oneof![
        (text(), resource_name(), text(), key_hash(), text()).prop_map(
            |(agent_id, name, profile_id, key_hash, key_prefix)| E::Created {
                agent_id,
                name,
                profile_id,
                key_hash,
                key_prefix,
            }
        ),
        (key_hash(), text()).prop_map(|(key_hash, key_prefix)| E::KeyRotated {
            key_hash,
            key_prefix
        }),
        non_blank().prop_map(|reason| E::Revoked { reason }),
    ]
}

fn deny_reason() -> impl Strategy<Value = DenyReason> {
    prop_oneof![
        Just(DenyReason::ProfileSuspended),
        Just(DenyReason::UnknownTool),
        Just(DenyReason::NotGranted),
        Just(DenyReason::Quarantined),
        Just(DenyReason::ConnectorNotActive),
        Just(DenyReason::ConcurrencyLimit),
        Just(DenyReason::InvalidArguments),
        Just(DenyReason::PolicyDenied),
        Just(DenyReason::RateLimited),
        Just(DenyReason::ApprovalDenied),
        Just(DenyReason::ApprovalPending),
    ]
}

fn call_outcome() -> impl Strategy<Value = CallOutcome> {
    prop_oneof![
        Just(CallOutcome::Ok),
        Just(CallOutcome::ToolError),
        Just(CallOutcome::UpstreamError),
        Just(CallOutcome::Unauthorized),
        Just(CallOutcome::CredentialUnavailable),
        Just(CallOutcome::Unavailable),
        Just(CallOutcome::Timeout),
        Just(CallOutcome::TooLarge),
    ]
}

/// How a started call ended: an outcome, and for `refused` (judged again after its record on
/// a replica) the reason, which may also be `agent_revoked`.
fn completion() -> impl Strategy<Value = (CallOutcome, Option<DenyReason>)> {
    prop_oneof![
        call_outcome().prop_map(|o| (o, None)),
        prop_oneof![deny_reason(), Just(DenyReason::AgentRevoked)]
            .prop_map(|r| (CallOutcome::Refused, Some(r))),
    ]
}

fn connector_state() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("pending"),
        Just("reauth_required"),
        Just("expired"),
        Just("error"),
        Just("disconnected"),
    ]
    .prop_map(str::to_string)
}

pub fn call_event() -> impl Strategy<Value = CallEvent> {
    use CallEvent as E;
    let who = || {
        (
            non_blank(),
            non_blank(),
            non_blank(),
            non_blank(),
            non_blank(),
        )
    };
    prop_oneof![
        (
            who(),
            tool_name(),
            (non_blank(), non_blank()),
            operation(),
            key_hash(),
            (any::<u64>(), option::of(non_blank()))
        )
            .prop_map(
                |(
                    (call_id, agent_id, agent, profile_id, profile),
                    tool,
                    (connector_id, connector),
                    operation,
                    arguments_sha256,
                    (arguments_bytes, approval_id),
                )| E::Started {
                    call_id,
                    agent_id,
                    agent,
                    profile_id,
                    profile,
                    tool,
                    connector_id,
                    connector,
                    operation,
                    decision: Decision::Allow,
                    arguments_sha256,
                    arguments_bytes,
                    approval_id,
                }
            ),
        (
            (
                non_blank(),
                non_blank(),
                non_blank(),
                option::of(non_blank())
            ),
            tool_name(),
            completion(),
            (
                any::<u64>(),
                any::<u64>(),
                0u32..=2,
                any::<bool>(),
                any::<u32>()
            )
        )
            .prop_map(
                |(
                    (call_id, agent_id, connector_id, approval_id),
                    tool,
                    (outcome, reason),
                    (latency_us, result_bytes, attempts, refreshed, redactions),
                )| E::Completed {
                    call_id,
                    agent_id,
                    tool,
                    connector_id,
                    outcome,
                    latency_us,
                    result_bytes,
                    attempts,
                    refreshed,
                    redactions,
                    approval_id,
                    reason,
                }
            ),
        (
            who(),
            option::of(tool_name()),
            option::of((non_blank(), non_blank(), operation())),
            deny_reason(),
            option::of(connector_state()),
            (key_hash(), option::of(non_blank()))
        )
            .prop_map(
                |(
                    (call_id, agent_id, agent, profile_id, profile),
                    tool,
                    entry,
                    reason,
                    connector_status,
                    (arguments_sha256, approval_id),
                )| {
                    let (connector_id, connector, operation) = match entry {
                        Some((i, n, o)) => (Some(i), Some(n), Some(o)),
                        None => (None, None, None),
                    };
                    E::Denied {
                        call_id,
                        agent_id,
                        agent,
                        profile_id,
                        profile,
                        tool,
                        connector_id,
                        connector,
                        operation,
                        decision: Decision::Deny,
                        reason,
                        connector_status,
                        arguments_sha256,
                        approval_id,
                    }
                }
            ),
    ]
}

pub fn approval_event() -> impl Strategy<Value = ApprovalEvent> {
    use ApprovalEvent as E;
    prop_oneof![
        (
            (non_blank(), non_blank(), non_blank(), non_blank()),
            (non_blank(), non_blank(), tool_name()),
            (non_blank(), non_blank(), operation()),
            (key_hash(), any::<bool>(), time())
        )
            .prop_map(
                |(
                    (approval_id, call_id, agent_id, agent),
                    (profile_id, profile, tool),
                    (connector_id, connector, operation),
                    (arguments_sha256, arguments_stored, expires_at),
                )| E::Requested {
                    approval_id,
                    call_id,
                    agent_id,
                    agent,
                    profile_id,
                    profile,
                    tool,
                    connector_id,
                    connector,
                    operation,
                    arguments_sha256,
                    arguments_stored,
                    expires_at,
                }
            ),
        non_blank().prop_map(|reason| E::Approved { reason }),
        non_blank().prop_map(|reason| E::Denied { reason }),
        non_blank().prop_map(|call_id| E::Used { call_id }),
        Just(E::Expired {}),
    ]
}

pub fn any_event() -> impl Strategy<Value = AgpEvent> {
    prop_oneof![
        19 => connector_event().prop_map(AgpEvent::Connector),
        5 => profile_event().prop_map(AgpEvent::Profile),
        3 => agent_event().prop_map(AgpEvent::Agent),
        3 => approval_event().prop_map(AgpEvent::Approval),
        3 => call_event().prop_map(AgpEvent::Call),
        1 => security_event().prop_map(AgpEvent::Security),
    ]
}

pub fn security_event() -> impl Strategy<Value = agp::domain::security::SecurityEvent> {
    use agp::domain::security::{CallbackRefusal as R, SecurityEvent as E};
    let reason = prop_oneof![
        Just(R::NoState),
        Just(R::InvalidState),
        Just(R::UnknownFlow),
        Just(R::Expired),
        Just(R::ForeignBrowser),
        Just(R::ForeignSession),
        Just(R::IssMissing),
        Just(R::IssMismatch),
    ];
    prop_oneof![
        (1u64..1000, 1u64..1000).prop_map(|(a, b)| E::KeyRotated {
            key_id: format!("k{a}"),
            previous_key_id: format!("k{b}"),
        }),
        (
            reason,
            proptest::option::of("[a-z][a-z0-9-]{0,20}"),
            any::<u64>()
        )
            .prop_map(|(reason, connector, suppressed)| E::CallbackRefused {
                reason,
                connector: connector.and_then(|c| agp::domain::ResourceName::parse(&c).ok()),
                suppressed,
            }),
        (1u64..1_000_000, 0u64..1000, 0u64..1_000_000_000_000u64).prop_map(|(first, n, micros)| {
            let time =
                chrono::DateTime::from_timestamp_micros(1_700_000_000_000_000 + micros as i64)
                    .expect("time");
            E::LogArchived {
                first_seq: first,
                last_seq: first + n,
                last_hash: "ab".repeat(32),
                records: n + 1,
                removed: n,
                selector: vec!["call.".into()],
                segments: vec![format!("{first:020}-{:020}.seg", first + n)],
                agents_last_call: [(format!("agent-{n}"), time)].into(),
                connectors_last_used: [(format!("conn-{n}"), time)].into(),
            }
        }),
        (name_kind(), resource_name(), "[0-9a-f-]{1,36}")
            .prop_map(|(kind, name, id)| { E::NameClaimed { kind, name, id } }),
        (
            name_kind(),
            resource_name(),
            "[0-9a-f-]{1,36}",
            prop_oneof![
                Just(agp::domain::security::NameRelease::Removed),
                Just(agp::domain::security::NameRelease::Abandoned),
                Just(agp::domain::security::NameRelease::Stale),
            ]
        )
            .prop_map(|(kind, name, id, reason)| E::NameReleased {
                kind,
                name,
                id,
                reason,
            }),
    ]
}

fn name_kind() -> impl Strategy<Value = agp::domain::security::NameKind> {
    use agp::domain::security::NameKind as K;
    prop_oneof![Just(K::Connector), Just(K::Profile), Just(K::Agent)]
}
