//! Given/when/then tests for every approval rule.

use chrono::{DateTime, Duration, Utc};
use cqrs_es::test::TestFramework;

use super::*;
use crate::domain::ToolName;
use crate::domain::connector::Operation;

fn framework() -> TestFramework<Approval> {
    TestFramework::with(())
}

fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("time")
}

fn held() -> HeldCall {
    HeldCall {
        call_id: "c1".into(),
        agent_id: "a1".into(),
        agent: "claude".into(),
        profile_id: "p1".into(),
        profile: "support".into(),
        tool: ToolName::parse("notion__create_page").expect("tool"),
        connector_id: "n1".into(),
        connector: "notion".into(),
        operation: Operation::Write,
        arguments_sha256: "ab".repeat(32),
    }
}

fn requested() -> ApprovalEvent {
    let h = held();
    ApprovalEvent::Requested {
        approval_id: "ap1".into(),
        call_id: h.call_id,
        agent_id: h.agent_id,
        agent: h.agent,
        profile_id: h.profile_id,
        profile: h.profile,
        tool: h.tool,
        connector_id: h.connector_id,
        connector: h.connector,
        operation: h.operation,
        arguments_sha256: h.arguments_sha256,
        arguments_stored: true,
        expires_at: t0() + Duration::hours(1),
    }
}

fn approved() -> ApprovalEvent {
    ApprovalEvent::Approved {
        reason: "looks fine".into(),
    }
}

fn use_by(call: &str, agent: &str, hash: &str, now: DateTime<Utc>) -> ApprovalCommand {
    ApprovalCommand::Use {
        call_id: call.into(),
        agent_id: agent.into(),
        arguments_sha256: hash.into(),
        now,
    }
}

#[tokio::test]
async fn a_held_call_is_requested_once() {
    framework()
        .given_no_previous_events()
        .when_async(ApprovalCommand::Request {
            approval_id: "ap1".into(),
            call: held(),
            arguments_stored: true,
            expires_at: t0() + Duration::hours(1),
        })
        .await
        .then_expect_events(vec![requested()]);
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Request {
            approval_id: "ap1".into(),
            call: held(),
            arguments_stored: true,
            expires_at: t0(),
        })
        .await
        .then_expect_error(ApprovalError::AlreadyExists);
    framework()
        .given_no_previous_events()
        .when_async(ApprovalCommand::Expire { now: t0() })
        .await
        .then_expect_error(ApprovalError::NotFound);
}

#[tokio::test]
async fn a_pending_approval_is_approved_or_denied_once_with_a_reason() {
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Approve {
            reason: "looks fine".into(),
            now: t0(),
        })
        .await
        .then_expect_events(vec![approved()]);
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Deny {
            reason: "no".into(),
            now: t0(),
        })
        .await
        .then_expect_events(vec![ApprovalEvent::Denied {
            reason: "no".into(),
        }]);
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Approve {
            reason: "  ".into(),
            now: t0(),
        })
        .await
        .then_expect_error(ApprovalError::ReasonRequired);
    framework()
        .given(vec![requested(), approved()])
        .when_async(ApprovalCommand::Deny {
            reason: "changed my mind".into(),
            now: t0(),
        })
        .await
        .then_expect_error(ApprovalError::AlreadyDecided("approved"));
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Approve {
            reason: "late".into(),
            now: t0() + Duration::hours(1),
        })
        .await
        .then_expect_error(ApprovalError::Expired);
}

#[tokio::test]
async fn an_approval_lets_exactly_one_identical_call_of_its_agent_through() {
    let hash = "ab".repeat(32);
    framework()
        .given(vec![requested(), approved()])
        .when_async(use_by("c2", "a1", &hash, t0()))
        .await
        .then_expect_events(vec![ApprovalEvent::Used {
            call_id: "c2".into(),
        }]);
    framework()
        .given(vec![
            requested(),
            approved(),
            ApprovalEvent::Used {
                call_id: "c2".into(),
            },
        ])
        .when_async(use_by("c3", "a1", &hash, t0()))
        .await
        .then_expect_error(ApprovalError::NotUsable("it was already used"));
    framework()
        .given(vec![requested(), approved()])
        .when_async(use_by("c2", "a2", &hash, t0()))
        .await
        .then_expect_error(ApprovalError::NotUsable("it approved another call"));
    framework()
        .given(vec![requested(), approved()])
        .when_async(use_by("c2", "a1", &"cd".repeat(32), t0()))
        .await
        .then_expect_error(ApprovalError::NotUsable("it approved another call"));
    framework()
        .given(vec![requested()])
        .when_async(use_by("c2", "a1", &hash, t0()))
        .await
        .then_expect_error(ApprovalError::NotUsable("it is not approved"));
    framework()
        .given(vec![requested(), approved()])
        .when_async(use_by("c2", "a1", &hash, t0() + Duration::hours(2)))
        .await
        .then_expect_error(ApprovalError::NotUsable("it has expired"));
}

#[tokio::test]
async fn pending_and_unused_approvals_expire_at_the_end_of_their_lifetime() {
    let later = t0() + Duration::hours(1);
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Expire { now: later })
        .await
        .then_expect_events(vec![ApprovalEvent::Expired {}]);
    framework()
        .given(vec![requested(), approved()])
        .when_async(ApprovalCommand::Expire { now: later })
        .await
        .then_expect_events(vec![ApprovalEvent::Expired {}]);
    framework()
        .given(vec![requested()])
        .when_async(ApprovalCommand::Expire { now: t0() })
        .await
        .then_expect_error(ApprovalError::NotDue);
    framework()
        .given(vec![
            requested(),
            approved(),
            ApprovalEvent::Used {
                call_id: "c2".into(),
            },
        ])
        .when_async(ApprovalCommand::Expire { now: later })
        .await
        .then_expect_error(ApprovalError::NotDue);
    framework()
        .given(vec![
            requested(),
            ApprovalEvent::Denied {
                reason: "no".into(),
            },
        ])
        .when_async(ApprovalCommand::Expire { now: later })
        .await
        .then_expect_error(ApprovalError::NotDue);
}
