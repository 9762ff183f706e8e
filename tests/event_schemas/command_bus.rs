//! Events written through the real command path (`CommandBus` → `LogEventStore` → log) match
//! their schemas and decode.

use std::sync::Arc;

use agp::domain::AgpEvent;
use agp::domain::agent::{Agent, AgentCommand};
use agp::domain::connector::{
    Connector, ConnectorCommand, ConnectorStatus, Operation, Overrides, RegisteredTool,
    Registration, RevocationOutcome,
};
use agp::domain::profile::{Profile, ProfileCommand};
use agp::domain::upcast::current_version;
use agp::store::EventLog;
use agp::store::aggregate_store::{CommandBus, CommandMeta};
use chrono::{TimeZone, Utc};

use super::{samples, validator, vec_log};

/// Runs a connector, a profile and an agent through their lifecycles with `CommandBus` and
/// validates every record the log holds.
#[tokio::test]
async fn events_written_through_the_command_bus_match_their_schemas() {
    let log = Arc::new(vec_log::VecLog::new());
    let dyn_log: Arc<dyn EventLog> = log.clone();
    let meta = CommandMeta::system();
    let at = |h| {
        Utc.with_ymd_and_hms(2026, 11, 1, h, 0, 0)
            .single()
            .expect("time")
    };

    let connectors = CommandBus::<Connector>::new(dyn_log.clone(), ());
    let run = |command| connectors.execute("c1", command, &meta);
    run(ConnectorCommand::Add {
        registration_reason: None,
        connector_id: "c1".into(),
        name: samples::name("notion"),
        mcp_server_url: "https://mcp.notion.com/mcp".into(),
        client_name: "AGP notion".into(),
        registration: Registration::Dcr,
        scopes: None,
        overrides: Overrides::default(),
    })
    .await
    .expect("add");
    run(ConnectorCommand::StartConsent {
        flow_id: "f1".into(),
        requested_scopes: vec!["read".into()],
        expires_at: at(1),
    })
    .await
    .expect("start consent");
    run(ConnectorCommand::CompleteConsent {
        generation: 1,
        granted_scopes: vec!["read".into()],
        account: None,
        account_source: None,
        token_fingerprint: "fp".into(),
        access_token_expires_at: Some(at(2)),
        has_refresh_token: true,
    })
    .await
    .expect("complete consent");
    let alias = samples::name("notion");
    let tool = |upstream, operation| {
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
    };
    run(ConnectorCommand::RegisterTools {
        alias: alias.clone(),
        tools: vec![
            tool("search", Operation::Read),
            tool("create-page", Operation::Write),
        ],
    })
    .await
    .expect("register tools");
    run(ConnectorCommand::ChangeToolOperation {
        name: samples::tool("notion__search"),
        operation: Operation::Write,
        reason: "it edits".into(),
    })
    .await
    .expect("change operation");
    run(ConnectorCommand::UnregisterTools {
        names: vec![samples::tool("notion__create-page")],
        reason: "unused".into(),
    })
    .await
    .expect("unregister");
    run(ConnectorCommand::Disconnect {
        reason: "admin".into(),
    })
    .await
    .expect("disconnect");
    for token_kind in ["refresh_token", "access_token"] {
        run(ConnectorCommand::RecordRevocation {
            generation: 1,
            token_kind: token_kind.into(),
            outcome: RevocationOutcome::Revoked,
            detail: None,
            next_attempt_at: None,
        })
        .await
        .expect("revocation");
    }
    run(ConnectorCommand::ShredCredentials { generation: 1 })
        .await
        .expect("shred");
    let removed = run(ConnectorCommand::Remove {
        confirm: "notion".into(),
    })
    .await
    .expect("remove");
    assert_eq!(removed.aggregate.status, ConnectorStatus::Removed);
    assert_eq!(
        connectors.load("c1").await.expect("load").status,
        ConnectorStatus::Removed
    );

    let profiles = CommandBus::<Profile>::new(dyn_log.clone(), ());
    for command in [
        ProfileCommand::Create {
            profile_id: "p1".into(),
            name: samples::name("support"),
            description: String::new(),
        },
        ProfileCommand::Grant {
            tools: vec![
                samples::tool("notion__search"),
                samples::tool("notion__fetch"),
            ],
            reason: "support".into(),
        },
        ProfileCommand::Revoke {
            tools: vec![samples::tool("notion__fetch")],
            reason: "not needed".into(),
        },
        ProfileCommand::Suspend {
            reason: "incident".into(),
        },
    ] {
        profiles
            .execute("p1", command, &meta)
            .await
            .expect("profile command");
    }

    let agents = CommandBus::<Agent>::new(dyn_log, ());
    for command in [
        AgentCommand::Create {
            agent_id: "a1".into(),
            name: samples::name("bot"),
            profile_id: "p1".into(),
            key_hash: samples::KEY_HASH.into(),
            key_prefix: "agp_9f86".into(),
        },
        AgentCommand::Revoke {
            reason: "done".into(),
        },
    ] {
        agents
            .execute("a1", command, &meta)
            .await
            .expect("agent command");
    }

    let records = log.read_all(1, usize::MAX).expect("read");
    assert_eq!(records.len(), 17);
    for r in &records {
        assert_eq!(r.schema_version, current_version(&r.event_type));
        assert!(r.hash_is_valid(), "hash of seq {}", r.seq);
        let v = validator(&r.event_type, r.schema_version);
        if let Err(e) = v.validate(&r.data) {
            panic!(
                "seq {} {} does not match its schema: {e}",
                r.seq, r.event_type
            );
        }
        let decoded = AgpEvent::decode(&r.event_type, r.schema_version, &r.data)
            .unwrap_or_else(|e| panic!("seq {}: {e}", r.seq));
        assert_eq!(samples::type_of(&decoded), r.event_type);
    }
}
