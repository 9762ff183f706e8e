//! Projections: the connector status view through a whole lifecycle, and live (tailing)
//! projections equal a rebuild from event 0 after arbitrary command sequences (S21).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use agp::domain::agent::{Agent, AgentCommand};
use agp::domain::connector::{
    Connector, ConnectorCommand, DiscoveredMetadata, Overrides, Registration, RevocationOutcome,
    TokenAuthMethod,
};
use agp::domain::profile::{Profile, ProfileCommand};
use agp::domain::{ResourceName, ToolName};
use agp::projections::{LiveProjections, Projection, ProjectionSet};
use agp::store::aggregate_store::{CommandBus, CommandMeta};
use agp::store::{EventLog, MemLog, SledLog, SledOptions};
use chrono::{TimeZone, Utc};
use proptest::prelude::*;

fn meta() -> CommandMeta {
    CommandMeta {
        actor: "admin:test".into(),
        correlation_id: uuid::Uuid::now_v7(),
    }
}

#[tokio::test]
async fn connector_view_follows_the_lifecycle() {
    let log: Arc<dyn EventLog> = Arc::new(MemLog::new());
    let live = LiveProjections::start(log.clone()).await.unwrap();
    let bus = CommandBus::<Connector>::new(log.clone(), ());
    let run = |cmd: ConnectorCommand| {
        let bus = &bus;
        let live = live.clone();
        async move {
            let c = bus.execute("c1", cmd, &meta()).await.unwrap();
            live.wait_for(c.appended.unwrap().last_seq, Duration::from_secs(5))
                .await
                .unwrap();
            live.read(|p| {
                let v = p.connectors.get("notion").cloned();
                // The proxy's shared copy follows every connector event, removal included.
                assert_eq!(p.connectors.for_call("c1").as_deref(), v.as_ref());
                v
            })
        }
    };
    let at = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
    let v = run(ConnectorCommand::Add {
        registration_reason: None,
        connector_id: "c1".into(),
        name: ResourceName::parse("notion").unwrap(),
        mcp_server_url: "https://mcp.example.com/mcp".into(),
        client_name: "AGP notion".into(),
        registration: Registration::Dcr,
        scopes: None,
        overrides: Overrides {
            token_endpoint: Some("https://override.example.com/token".into()),
            audience: Some("https://mcp.example.com".into()),
            ..Overrides::default()
        },
    })
    .await
    .unwrap();
    assert_eq!(v.status, "pending");
    assert_eq!(v.filter_group(), "inactive");
    assert_eq!(
        v.token_endpoint.as_deref(),
        Some("https://override.example.com/token")
    );
    assert_eq!(v.registration_mode, "dcr");

    let v = run(ConnectorCommand::RecordDiscovery {
        metadata: DiscoveredMetadata {
            issuer: Some("https://as.example.com".into()),
            authorization_endpoint: Some("https://as.example.com/authorize".into()),
            token_endpoint: Some("https://as.example.com/token".into()),
            registration_endpoint: Some("https://as.example.com/register".into()),
            resource: Some("https://mcp.example.com/mcp".into()),
            scopes_supported: vec!["read".into(), "write".into()],
            steps: vec!["prm: 200".into()],
            ..DiscoveredMetadata::default()
        },
    })
    .await
    .unwrap();
    // A filled override wins over discovery; everything else is discovered.
    assert_eq!(
        v.token_endpoint.as_deref(),
        Some("https://override.example.com/token")
    );
    assert_eq!(
        v.sources["token_endpoint"],
        agp::projections::connectors::Source::Override
    );
    assert_eq!(v.issuer.as_deref(), Some("https://as.example.com"));
    assert_eq!(
        v.sources["issuer"],
        agp::projections::connectors::Source::Discovered
    );
    assert_eq!(v.scopes, ["read", "write"]);
    assert!(!v.scopes_overridden);

    let v = run(ConnectorCommand::RecordClientRegistration {
        issuer: "https://as.example.com".into(),
        client_id: "dcr-client-1".into(),
        token_auth_method: TokenAuthMethod::ClientSecretBasic,
        token_auth_method_reason: "the server lists no token_endpoint_auth_methods_supported"
            .into(),
        client_secret_stored: true,
        registration_access_token_stored: true,
    })
    .await
    .unwrap();
    assert_eq!(v.client_id.as_deref(), Some("dcr-client-1"));
    assert_eq!(
        v.token_auth_method_reason.as_deref(),
        Some("the server lists no token_endpoint_auth_methods_supported")
    );
    // No revocation list discovered: RFC 8414's default for the revocation endpoint.
    assert_eq!(
        v.revocation_auth_method.as_deref(),
        Some("client_secret_basic")
    );
    assert!(v.client_secret_stored);

    let v = run(ConnectorCommand::StartConsent {
        flow_id: "f1".into(),
        requested_scopes: vec!["read".into()],
        expires_at: at,
    })
    .await
    .unwrap();
    assert_eq!(
        (v.status.as_str(), v.generation, v.awaiting_consent),
        ("pending", 1, true)
    );

    let v = run(ConnectorCommand::CompleteConsent {
        generation: 1,
        granted_scopes: vec!["read".into()],
        account: Some("ops@example.com".into()),
        account_source: Some(agp::domain::connector::AccountSource::Userinfo),
        token_fingerprint: "fp1".into(),
        access_token_expires_at: Some(at),
        has_refresh_token: true,
    })
    .await
    .unwrap();
    assert_eq!(v.status, "active");
    assert_eq!(v.filter_group(), "active");
    assert_eq!(v.account.as_deref(), Some("ops@example.com"));
    assert_eq!(v.account_source.as_deref(), Some("userinfo"));
    assert!(v.authorized_at.is_some());

    let v = run(ConnectorCommand::RequireReauth {
        generation: 1,
        reason: "invalid_grant".into(),
    })
    .await
    .unwrap();
    assert_eq!(
        (v.status.as_str(), v.filter_group()),
        ("reauth_required", "needs-attention")
    );
    assert_eq!(v.last_error.as_deref(), Some("invalid_grant"));

    let v = run(ConnectorCommand::Disconnect {
        reason: "admin".into(),
    })
    .await
    .unwrap();
    assert_eq!(v.status, "disconnected");
    assert!(v.token_fingerprint.is_none());

    let v = run(ConnectorCommand::RecordRevocation {
        generation: 1,
        token_kind: "refresh_token".into(),
        outcome: RevocationOutcome::Revoked,
        detail: None,
        next_attempt_at: None,
    })
    .await
    .unwrap();
    assert_eq!(v.revocations.len(), 1);

    let v = run(ConnectorCommand::Remove {
        confirm: "notion".into(),
    })
    .await;
    assert!(v.is_none(), "a removed connector leaves the status view");
    let snapshot = live.snapshot();
    let rebuilt = ProjectionSet::rebuild(log.as_ref(), None).unwrap();
    assert_eq!(snapshot.digests(), rebuilt.digests());
    // The audit log still names every step.
    assert_eq!(snapshot.audit.len(), 9);
}

#[derive(Debug, Clone)]
enum Op {
    CreateProfile(u8),
    Grant(u8, u8),
    Revoke(u8, u8),
    Suspend(u8),
    Resume(u8),
    CreateAgent(u8, u8),
    Rotate(u8),
    RevokeAgent(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8).prop_map(Op::CreateProfile),
        (0..4u8, 0..6u8).prop_map(|(p, t)| Op::Grant(p, t)),
        (0..4u8, 0..6u8).prop_map(|(p, t)| Op::Revoke(p, t)),
        (0..4u8).prop_map(Op::Suspend),
        (0..4u8).prop_map(Op::Resume),
        (0..6u8, 0..4u8).prop_map(|(a, p)| Op::CreateAgent(a, p)),
        (0..6u8).prop_map(Op::Rotate),
        (0..6u8).prop_map(Op::RevokeAgent),
    ]
}

fn tool(t: u8) -> ToolName {
    ToolName::parse(&format!("conn__tool-{t}")).unwrap()
}

/// Where [`apply_ops`] runs: `MemLog` cannot be observed, so its projections tail the head
/// watch; `SledLog`'s writer folds each commit itself, and a second follower of the same log
/// (started half-way) tails it.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Mem,
    Sled,
}

async fn apply_ops(ops: Vec<Op>, backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> = match backend {
        Backend::Mem => Arc::new(MemLog::new()),
        Backend::Sled => Arc::new(SledLog::open(dir.path(), SledOptions::default()).unwrap().0),
    };
    let live = LiveProjections::start(log.clone()).await.unwrap();
    let half = ops.len() / 2;
    let mut second = None;
    let profiles = CommandBus::<Profile>::new(log.clone(), ());
    let agents = CommandBus::<Agent>::new(log.clone(), ());
    for (i, op) in ops.into_iter().enumerate() {
        if i == half {
            second = Some(LiveProjections::start(log.clone()).await.unwrap());
        }
        if let Backend::Sled = backend {
            // Folded by the writer: an acknowledged append is already in the projections.
            assert_eq!(live.checkpoint(), log.head());
        }
        // Rule violations are fine: they must simply write nothing.
        match op {
            Op::CreateProfile(p) => {
                let _ = profiles
                    .execute(
                        &format!("p{p}"),
                        ProfileCommand::Create {
                            profile_id: format!("p{p}"),
                            name: ResourceName::parse(&format!("profile-{p}")).unwrap(),
                            description: String::new(),
                        },
                        &meta(),
                    )
                    .await;
            }
            Op::Grant(p, t) | Op::Revoke(p, t) => {
                let cmd = if matches!(op, Op::Grant(..)) {
                    ProfileCommand::Grant {
                        tools: vec![tool(t)],
                        reason: "because".into(),
                    }
                } else {
                    ProfileCommand::Revoke {
                        tools: vec![tool(t)],
                        reason: "because".into(),
                    }
                };
                let _ = profiles.execute(&format!("p{p}"), cmd, &meta()).await;
            }
            Op::Suspend(p) => {
                let cmd = ProfileCommand::Suspend { reason: "r".into() };
                let _ = profiles.execute(&format!("p{p}"), cmd, &meta()).await;
            }
            Op::Resume(p) => {
                let cmd = ProfileCommand::Resume { reason: "r".into() };
                let _ = profiles.execute(&format!("p{p}"), cmd, &meta()).await;
            }
            Op::CreateAgent(a, p) => {
                let cmd = AgentCommand::Create {
                    agent_id: format!("a{a}"),
                    name: ResourceName::parse(&format!("agent-{a}")).unwrap(),
                    profile_id: format!("p{p}"),
                    key_hash: format!("{:064x}", u64::from(a) * 1000 + i as u64),
                    key_prefix: "agp_x".into(),
                };
                let _ = agents.execute(&format!("a{a}"), cmd, &meta()).await;
            }
            Op::Rotate(a) => {
                let cmd = AgentCommand::RotateKey {
                    key_hash: format!("{:064x}", u64::from(a) * 1000 + i as u64 + 1),
                    key_prefix: "agp_y".into(),
                };
                let _ = agents.execute(&format!("a{a}"), cmd, &meta()).await;
            }
            Op::RevokeAgent(a) => {
                let cmd = AgentCommand::Revoke { reason: "r".into() };
                let _ = agents.execute(&format!("a{a}"), cmd, &meta()).await;
            }
        }
    }
    live.wait_for(log.head(), Duration::from_secs(5))
        .await
        .unwrap();
    let live_set = live.snapshot();
    let rebuilt = ProjectionSet::rebuild(log.as_ref(), None).unwrap();
    let sequential = ProjectionSet::rebuild_with(log.as_ref(), None, 1).unwrap();
    assert_eq!(live_set.checkpoint, log.head());
    assert_eq!(live_set.digests(), rebuilt.digests());
    assert_eq!(live_set.digests(), sequential.digests());
    // Key lookups agree with agent status: a revoked agent's key resolves to nothing.
    for agent in live_set.grants.agents() {
        let listed = live_set.grants.state()["agent_keys"]
            .as_object()
            .unwrap()
            .values()
            .any(|id| id == &agent.agent_id);
        assert_eq!(listed, agent.status == "active", "{agent:?}");
    }
    if let Some(second) = second {
        second
            .wait_for(log.head(), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(second.snapshot().digests(), live_set.digests());
        second.stop().await;
    }
    live.stop().await;
    let _ = log.close().await;
}

/// Commits that land while the projections start (between the rebuild and the observer) are
/// caught up, and what the writer folds afterwards follows on without a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_racing_the_start_are_caught_up() {
    let dir = tempfile::tempdir().unwrap();
    let log: Arc<dyn EventLog> =
        Arc::new(SledLog::open(dir.path(), SledOptions::default()).unwrap().0);
    let writer = {
        let log = log.clone();
        tokio::spawn(async move {
            let profiles = CommandBus::<Profile>::new(log, ());
            for p in 0..300 {
                let cmd = ProfileCommand::Create {
                    profile_id: format!("p{p}"),
                    name: ResourceName::parse(&format!("profile-{p}")).unwrap(),
                    description: String::new(),
                };
                profiles
                    .execute(&format!("p{p}"), cmd, &meta())
                    .await
                    .unwrap();
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    let live = LiveProjections::start(log.clone()).await.unwrap();
    writer.await.unwrap();
    assert_eq!(log.head(), 300);
    live.wait_for(300, Duration::from_secs(10)).await.unwrap();
    let rebuilt = ProjectionSet::rebuild(log.as_ref(), None).unwrap();
    assert_eq!(live.snapshot().digests(), rebuilt.digests());
    live.stop().await;
    let _ = log.close().await;
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]
    #[test]
    fn live_projections_equal_a_rebuild(ops in proptest::collection::vec(op(), 1..60)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(apply_ops(ops.clone(), Backend::Mem));
        rt.block_on(apply_ops(ops, Backend::Sled));
    }
}
