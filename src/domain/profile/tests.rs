//! Given/when/then tests for every profile rule, and the replay property: folding the events a
//! command emitted onto the state before it gives the state the handler left.

use cqrs_es::Aggregate;
use cqrs_es::event_sink::EventSink;
use cqrs_es::test::TestFramework;
use proptest::prelude::*;

use super::*;
use crate::domain::{ResourceName, ToolName};

fn framework() -> TestFramework<Profile> {
    TestFramework::with(())
}

fn tool(s: &str) -> ToolName {
    ToolName::parse(s).expect("valid tool name")
}

fn tools(names: &[&str]) -> Vec<ToolName> {
    names.iter().map(|s| tool(s)).collect()
}

fn create_cmd() -> ProfileCommand {
    ProfileCommand::Create {
        profile_id: "p1".into(),
        name: ResourceName::parse("support-bot").expect("valid name"),
        description: "Answers support tickets".into(),
    }
}

fn created() -> ProfileEvent {
    ProfileEvent::Created {
        profile_id: "p1".into(),
        name: ResourceName::parse("support-bot").expect("valid name"),
        description: "Answers support tickets".into(),
        policy: Policy::for_new_profile(),
    }
}

fn grant(names: &[&str], reason: &str) -> ProfileCommand {
    ProfileCommand::Grant {
        tools: tools(names),
        reason: reason.into(),
    }
}

fn revoke(names: &[&str], reason: &str) -> ProfileCommand {
    ProfileCommand::Revoke {
        tools: tools(names),
        reason: reason.into(),
    }
}

fn granted(names: &[&str], reason: &str) -> ProfileEvent {
    ProfileEvent::ToolsGranted {
        tools: tools(names),
        reason: reason.into(),
    }
}

fn revoked(names: &[&str], reason: &str) -> ProfileEvent {
    ProfileEvent::ToolsRevoked {
        tools: tools(names),
        reason: reason.into(),
    }
}

/// Created, with `notion__search` and `notion__fetch` granted.
fn with_grants() -> Vec<ProfileEvent> {
    vec![
        created(),
        granted(&["notion__search", "notion__fetch"], "read-only support"),
    ]
}

fn suspended() -> Vec<ProfileEvent> {
    vec![
        created(),
        ProfileEvent::Suspended {
            reason: "incident 42".into(),
        },
    ]
}

// ---- create ---------------------------------------------------------------------------------

#[tokio::test]
async fn create_records_created() {
    framework()
        .given_no_previous_events()
        .when_async(create_cmd())
        .await
        .then_expect_events(vec![created()]);
}

#[tokio::test]
async fn create_twice_is_refused() {
    for history in [vec![created()], with_grants(), suspended()] {
        framework()
            .given(history)
            .when_async(create_cmd())
            .await
            .then_expect_error(ProfileError::AlreadyExists);
    }
}

#[tokio::test]
async fn commands_on_a_missing_profile_are_not_found() {
    for command in [
        grant(&["notion__search"], "r"),
        revoke(&["notion__search"], "r"),
        ProfileCommand::Suspend { reason: "r".into() },
        ProfileCommand::Resume { reason: "r".into() },
    ] {
        framework()
            .given_no_previous_events()
            .when_async(command)
            .await
            .then_expect_error(ProfileError::NotFound);
    }
}

// ---- grant ----------------------------------------------------------------------------------

#[tokio::test]
async fn grant_records_the_tools_with_the_reason() {
    framework()
        .given(vec![created()])
        .when_async(grant(
            &["notion__search", "notion__fetch"],
            "read-only support",
        ))
        .await
        .then_expect_events(vec![granted(
            &["notion__search", "notion__fetch"],
            "read-only support",
        )]);
}

#[tokio::test]
async fn grant_records_only_tools_not_yet_granted() {
    framework()
        .given(with_grants())
        .when_async(grant(
            &[
                "notion__search",
                "notion__create-pages",
                "notion__fetch",
                "notion__create-pages",
            ],
            "can now draft pages",
        ))
        .await
        .then_expect_events(vec![granted(
            &["notion__create-pages"],
            "can now draft pages",
        )]);
}

#[tokio::test]
async fn regranting_granted_tools_records_nothing() {
    framework()
        .given(with_grants())
        .when_async(grant(&["notion__fetch", "notion__search"], "again"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn grant_without_a_reason_is_refused() {
    for reason in ["", "  \n\t"] {
        framework()
            .given(vec![created()])
            .when_async(grant(&["notion__search"], reason))
            .await
            .then_expect_error(ProfileError::ReasonRequired);
    }
}

#[tokio::test]
async fn grant_without_tools_is_refused() {
    framework()
        .given(vec![created()])
        .when_async(grant(&[], "nothing"))
        .await
        .then_expect_error(ProfileError::NoTools);
}

#[tokio::test]
async fn grant_to_a_suspended_profile_is_recorded() {
    // Suspension stops serving; it does not freeze the grant list.
    framework()
        .given(suspended())
        .when_async(grant(&["notion__search"], "prepare for resume"))
        .await
        .then_expect_events(vec![granted(&["notion__search"], "prepare for resume")]);
}

// ---- revoke ---------------------------------------------------------------------------------

#[tokio::test]
async fn revoke_records_the_granted_tools() {
    framework()
        .given(with_grants())
        .when_async(revoke(&["notion__fetch"], "not needed"))
        .await
        .then_expect_events(vec![revoked(&["notion__fetch"], "not needed")]);
}

#[tokio::test]
async fn revoke_names_each_tool_once() {
    framework()
        .given(with_grants())
        .when_async(revoke(
            &["notion__fetch", "notion__search", "notion__fetch"],
            "offboarding",
        ))
        .await
        .then_expect_events(vec![revoked(
            &["notion__fetch", "notion__search"],
            "offboarding",
        )]);
}

#[tokio::test]
async fn revoke_of_a_tool_not_granted_is_refused() {
    framework()
        .given(with_grants())
        .when_async(revoke(&["notion__fetch", "slack__post"], "cleanup"))
        .await
        .then_expect_error(ProfileError::NotGranted("slack__post".into()));
}

#[tokio::test]
async fn revoke_of_an_already_revoked_tool_is_refused() {
    let mut history = with_grants();
    history.push(revoked(&["notion__fetch"], "not needed"));
    framework()
        .given(history)
        .when_async(revoke(&["notion__fetch"], "again"))
        .await
        .then_expect_error(ProfileError::NotGranted("notion__fetch".into()));
}

#[tokio::test]
async fn revoke_without_a_reason_or_tools_is_refused() {
    framework()
        .given(with_grants())
        .when_async(revoke(&["notion__fetch"], " "))
        .await
        .then_expect_error(ProfileError::ReasonRequired);
    framework()
        .given(with_grants())
        .when_async(revoke(&[], "cleanup"))
        .await
        .then_expect_error(ProfileError::NoTools);
}

// ---- suspend / resume -----------------------------------------------------------------------

#[tokio::test]
async fn suspend_records_suspended() {
    framework()
        .given(with_grants())
        .when_async(ProfileCommand::Suspend {
            reason: "incident 42".into(),
        })
        .await
        .then_expect_events(vec![ProfileEvent::Suspended {
            reason: "incident 42".into(),
        }]);
}

#[tokio::test]
async fn suspend_twice_is_refused() {
    framework()
        .given(suspended())
        .when_async(ProfileCommand::Suspend {
            reason: "again".into(),
        })
        .await
        .then_expect_error(ProfileError::AlreadySuspended);
}

#[tokio::test]
async fn resume_records_resumed() {
    framework()
        .given(suspended())
        .when_async(ProfileCommand::Resume {
            reason: "incident closed".into(),
        })
        .await
        .then_expect_events(vec![ProfileEvent::Resumed {
            reason: "incident closed".into(),
        }]);
}

#[tokio::test]
async fn resume_when_not_suspended_is_refused() {
    let mut resumed = suspended();
    resumed.push(ProfileEvent::Resumed {
        reason: "incident closed".into(),
    });
    for history in [vec![created()], resumed] {
        framework()
            .given(history)
            .when_async(ProfileCommand::Resume {
                reason: "again".into(),
            })
            .await
            .then_expect_error(ProfileError::NotSuspended);
    }
}

#[tokio::test]
async fn suspend_and_resume_need_a_reason() {
    framework()
        .given(vec![created()])
        .when_async(ProfileCommand::Suspend { reason: "".into() })
        .await
        .then_expect_error(ProfileError::ReasonRequired);
    framework()
        .given(suspended())
        .when_async(ProfileCommand::Resume {
            reason: "\t".into(),
        })
        .await
        .then_expect_error(ProfileError::ReasonRequired);
}

#[test]
fn state_follows_grants_revocations_and_suspension() {
    let mut p = Profile::default();
    for e in with_grants() {
        p.apply(e);
    }
    p.apply(revoked(&["notion__fetch"], "not needed"));
    p.apply(ProfileEvent::Suspended { reason: "x".into() });
    assert_eq!(p.profile_id.as_deref(), Some("p1"));
    assert_eq!(
        p.grants.keys().map(ToolName::as_str).collect::<Vec<_>>(),
        ["notion__search"]
    );
    assert_eq!(p.grants[&tool("notion__search")], "read-only support");
    assert!(p.suspended);
}

// ---- replay = live state --------------------------------------------------------------------

/// A small tool pool, so generated grants and revocations collide.
fn arb_tools() -> impl Strategy<Value = Vec<ToolName>> {
    prop::collection::vec(
        prop::sample::select(vec!["a__x", "a__y", "b__z", "b__w"]).prop_map(tool),
        0..4,
    )
}

fn arb_reason() -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(String::new()), 1 => Just(" ".to_string()), 6 => "[a-z ]{1,12}"]
}

fn arb_command() -> impl Strategy<Value = ProfileCommand> {
    prop_oneof![
        1 => Just(create_cmd()),
        4 => (arb_tools(), arb_reason())
            .prop_map(|(tools, reason)| ProfileCommand::Grant { tools, reason }),
        3 => (arb_tools(), arb_reason())
            .prop_map(|(tools, reason)| ProfileCommand::Revoke { tools, reason }),
        1 => arb_reason().prop_map(|reason| ProfileCommand::Suspend { reason }),
        1 => arb_reason().prop_map(|reason| ProfileCommand::Resume { reason }),
        2 => (arb_tools(), any::<bool>(), 0u32..3, arb_reason()).prop_map(
            |(tools, clear, n, reason)| {
                let rule = [Rule::Allow, Rule::Hold, Rule::Deny][n as usize];
                let change = if clear {
                    PolicyChange { clear_tools: tools, ..Default::default() }
                } else {
                    PolicyChange {
                        write: Some(rule),
                        set_tools: tools.into_iter().map(|t| (t, rule)).collect(),
                        max_calls_per_minute: Some(n),
                        ..Default::default()
                    }
                };
                ProfileCommand::SetPolicy { change, reason }
            }
        ),
    ]
}

fn set_policy(change: PolicyChange, reason: &str) -> ProfileCommand {
    ProfileCommand::SetPolicy {
        change,
        reason: reason.into(),
    }
}

#[tokio::test]
async fn a_new_profile_lets_reads_flow_and_holds_writes() {
    framework()
        .given_no_previous_events()
        .when_async(create_cmd())
        .await
        .then_expect_events(vec![created()]);
    assert_eq!(
        Policy::for_new_profile(),
        Policy {
            read: Rule::Allow,
            write: Rule::Hold,
            tools: Default::default(),
            max_calls_per_minute: 0
        }
    );
}

#[tokio::test]
async fn a_policy_change_records_the_whole_policy_with_its_reason() {
    let change = PolicyChange {
        write: Some(Rule::Deny),
        set_tools: [(tool("notion__search"), Rule::Hold)].into(),
        max_calls_per_minute: Some(60),
        ..Default::default()
    };
    let mut expected = Policy::for_new_profile();
    expected.write = Rule::Deny;
    expected.tools.insert(tool("notion__search"), Rule::Hold);
    expected.max_calls_per_minute = 60;
    framework()
        .given(vec![created()])
        .when_async(set_policy(change, "tighten"))
        .await
        .then_expect_events(vec![ProfileEvent::PolicyChanged {
            policy: expected,
            reason: "tighten".into(),
        }]);
}

#[tokio::test]
async fn a_policy_change_needs_a_reason_something_to_change_and_an_existing_rule_to_clear() {
    let deny_writes = PolicyChange {
        write: Some(Rule::Deny),
        ..Default::default()
    };
    framework()
        .given(vec![created()])
        .when_async(set_policy(deny_writes.clone(), " "))
        .await
        .then_expect_error(ProfileError::ReasonRequired);
    framework()
        .given(vec![created()])
        .when_async(set_policy(PolicyChange::default(), "r"))
        .await
        .then_expect_error(ProfileError::EmptyPolicyChange);
    let clear = PolicyChange {
        clear_tools: vec![tool("notion__search")],
        ..Default::default()
    };
    framework()
        .given(vec![created()])
        .when_async(set_policy(clear, "r"))
        .await
        .then_expect_error(ProfileError::NoToolRule("notion__search".into()));
    framework()
        .given_no_previous_events()
        .when_async(set_policy(deny_writes, "r"))
        .await
        .then_expect_error(ProfileError::NotFound);
}

#[tokio::test]
async fn a_change_to_what_the_policy_already_says_records_nothing() {
    let same = PolicyChange {
        read: Some(Rule::Allow),
        write: Some(Rule::Hold),
        ..Default::default()
    };
    framework()
        .given(vec![created()])
        .when_async(set_policy(same, "no-op"))
        .await
        .then_expect_events(vec![]);
}

/// Runs one command on `live` as the command bus does, returning the emitted events.
fn handle(live: &mut Profile, command: ProfileCommand) -> Result<Vec<ProfileEvent>, ProfileError> {
    futures::executor::block_on(async {
        let sink = EventSink::<Profile>::default();
        live.handle(command, &(), &sink).await?;
        Ok(sink.collect().await)
    })
}

proptest! {
    #[test]
    fn replaying_emitted_events_rebuilds_the_live_state(
        commands in prop::collection::vec(arb_command(), 0..40),
        create_first in any::<bool>(),
    ) {
        let mut live = Profile::default();
        let mut log: Vec<ProfileEvent> = Vec::new();
        let commands = if create_first {
            std::iter::once(create_cmd()).chain(commands).collect()
        } else {
            commands
        };
        for command in commands {
            let before = live.clone();
            match handle(&mut live, command) {
                Ok(events) => {
                    // Every emitted event is non-trivial: grants are new, revocations granted.
                    for e in &events {
                        if let ProfileEvent::ToolsGranted { tools, .. }
                        | ProfileEvent::ToolsRevoked { tools, .. } = e
                        {
                            prop_assert!(!tools.is_empty());
                            let mut unique = tools.clone();
                            unique.sort();
                            unique.dedup();
                            prop_assert_eq!(unique.len(), tools.len());
                        }
                    }
                    log.extend(events);
                }
                // A refused command leaves the state untouched.
                Err(_) => prop_assert_eq!(&live, &before),
            }
            let mut replayed = Profile::default();
            for e in log.iter().cloned() {
                replayed.apply(e);
            }
            prop_assert_eq!(&replayed, &live);
        }
    }
}
