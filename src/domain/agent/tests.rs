//! Given/when/then tests for every agent rule.

use cqrs_es::Aggregate;
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::ResourceName;

const HASH_1: &str = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
const HASH_2: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";

fn framework() -> TestFramework<Agent> {
    TestFramework::with(())
}

fn create_cmd(key_hash: &str) -> AgentCommand {
    AgentCommand::Create {
        agent_id: "a1".into(),
        name: ResourceName::parse("claude-desktop").expect("valid name"),
        profile_id: "p1".into(),
        key_hash: key_hash.into(),
        key_prefix: "agp_0f1e2d3c".into(),
    }
}

fn created() -> AgentEvent {
    AgentEvent::Created {
        agent_id: "a1".into(),
        name: ResourceName::parse("claude-desktop").expect("valid name"),
        profile_id: "p1".into(),
        key_hash: HASH_1.into(),
        key_prefix: "agp_0f1e2d3c".into(),
    }
}

fn rotate_cmd(key_hash: &str) -> AgentCommand {
    AgentCommand::RotateKey {
        key_hash: key_hash.into(),
        key_prefix: "agp_aaaaaaaa".into(),
    }
}

fn revoke_cmd(reason: &str) -> AgentCommand {
    AgentCommand::Revoke {
        reason: reason.into(),
    }
}

fn revoked_history() -> Vec<AgentEvent> {
    vec![
        created(),
        AgentEvent::Revoked {
            reason: "laptop lost".into(),
        },
    ]
}

/// Key hashes that are not 64 lowercase hex characters.
fn bad_hashes() -> Vec<String> {
    vec![
        String::new(),
        "abc".into(),
        HASH_1.to_uppercase(),
        format!("{HASH_1}0"),
        HASH_1[..63].to_string(),
        format!("{}g", &HASH_1[..63]),
        "agp_secret_key_material_that_is_not_a_hash_000000000000000000000".into(),
    ]
}

#[tokio::test]
async fn create_records_created() {
    framework()
        .given_no_previous_events()
        .when_async(create_cmd(HASH_1))
        .await
        .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn create_with_a_bad_key_hash_is_refused() {
    for hash in bad_hashes() {
        framework()
            .given_no_previous_events()
            .when_async(create_cmd(&hash))
            .await
            .then_expect_error(AgentError::BadKeyHash);
    }
}

#[tokio::test]
async fn create_twice_is_refused_even_after_revocation() {
    for history in [vec![created()], revoked_history()] {
        framework()
            .given(history)
            .when_async(create_cmd(HASH_2))
            .await
            .then_expect_error(AgentError::AlreadyExists);
    }
}

#[tokio::test]
async fn rotate_records_the_new_key_hash() {
    framework()
        .given(vec![created()])
        .when_async(rotate_cmd(HASH_2))
        .await
        .then_expect_events(vec![AgentEvent::KeyRotated {
            key_hash: HASH_2.into(),
            key_prefix: "agp_aaaaaaaa".into(),
        }]);
}

#[tokio::test]
async fn rotate_with_a_bad_key_hash_is_refused() {
    for hash in bad_hashes() {
        framework()
            .given(vec![created()])
            .when_async(rotate_cmd(&hash))
            .await
            .then_expect_error(AgentError::BadKeyHash);
    }
}

#[tokio::test]
async fn revoke_records_revoked() {
    framework()
        .given(vec![created()])
        .when_async(revoke_cmd("laptop lost"))
        .await
        .then_expect_events(vec![AgentEvent::Revoked {
            reason: "laptop lost".into(),
        }]);
}

#[tokio::test]
async fn revoke_without_a_reason_is_refused() {
    for reason in ["", "   "] {
        framework()
            .given(vec![created()])
            .when_async(revoke_cmd(reason))
            .await
            .then_expect_error(AgentError::ReasonRequired);
    }
}

#[tokio::test]
async fn commands_after_revocation_are_refused() {
    for command in [rotate_cmd(HASH_2), revoke_cmd("again")] {
        framework()
            .given(revoked_history())
            .when_async(command)
            .await
            .then_expect_error(AgentError::Revoked);
    }
}

#[tokio::test]
async fn commands_on_a_missing_agent_are_not_found() {
    for command in [rotate_cmd(HASH_2), revoke_cmd("r")] {
        framework()
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(AgentError::NotFound);
    }
}

#[test]
fn state_follows_rotation_and_revocation() {
    let mut a = Agent::default();
    a.apply(created());
    assert_eq!(a.key_hash.as_deref(), Some(HASH_1));
    a.apply(AgentEvent::KeyRotated {
        key_hash: HASH_2.into(),
        key_prefix: "agp_aaaaaaaa".into(),
    });
    assert_eq!(a.key_hash.as_deref(), Some(HASH_2));
    assert!(!a.revoked);
    a.apply(AgentEvent::Revoked { reason: "x".into() });
    assert!(a.revoked);
    assert_eq!(a.profile_id.as_deref(), Some("p1"));
}
