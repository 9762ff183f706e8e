//! The audit log folded from records: what each entry concerns, the time window, paging in both
//! orders, cursors, and the state `agp audit replay` compares.

mod history;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{TimeZone, Utc};
use serde_json::json;

use super::*;
use history::{Log, T0, history, started};

fn q() -> AuditQuery {
    AuditQuery::default()
}

#[test]
fn a_class_stays_16_bytes() {
    assert_eq!(std::mem::size_of::<Class>(), 16);
}

#[test]
fn agent_filter_finds_its_own_events_and_its_calls_by_id() {
    let log = history();
    let agent = |a: &str| {
        log.seqs(AuditQuery {
            agent: Some(a.into()),
            ..q()
        })
    };
    // call.completed names only ids: resolved through agent.created.
    assert_eq!(agent("claude"), [5, 6, 7, 13, 14]);
    assert_eq!(agent("bot"), [9, 10, 11]);
    assert!(agent("nobody").is_empty());
}

#[test]
fn profile_filter_finds_its_events_bindings_and_calls() {
    let log = history();
    let profile = |p: &str| {
        log.seqs(AuditQuery {
            profile: Some(p.into()),
            ..q()
        })
    };
    // 5: the agent bound to it; 7: call.completed, through the agent's profile.
    assert_eq!(profile("support"), [1, 4, 5, 6, 7, 14]);
    assert_eq!(profile("ops"), [8, 9, 10, 11]);
    assert!(profile("Support").is_empty());
}

#[test]
fn tool_and_connector_filters_find_catalog_events_grants_and_calls() {
    let log = history();
    let tool = |t: &str| {
        log.seqs(AuditQuery {
            tool: Some(t.into()),
            ..q()
        })
    };
    assert_eq!(tool("notion__echo"), [3, 4, 6, 7, 14]);
    // A denial naming the tool, and its unregistration.
    assert_eq!(tool("notion__search"), [3, 10, 12]);
    assert!(tool("notion__nope").is_empty());
    let connector = log.seqs(AuditQuery {
        connector: Some("notion".into()),
        ..q()
    });
    // 10: a denial naming only the connector's id.
    assert_eq!(connector, [2, 3, 6, 7, 10, 12, 14]);
    // Filters combine.
    let both = log.seqs(AuditQuery {
        agent: Some("claude".into()),
        tool: Some("notion__echo".into()),
        event_type: Some("call.started".into()),
        ..q()
    });
    assert_eq!(both, [6, 14]);
}

#[test]
fn approval_filter_reads_the_id_from_data_or_the_stream() {
    let log = history();
    let approval = |a: &str| {
        log.seqs(AuditQuery {
            approval: Some(a.into()),
            ..q()
        })
    };
    assert_eq!(approval("ap1"), [14, 15]);
    assert!(approval("ap2").is_empty());
}

#[test]
fn the_time_window_is_inclusive_since_and_exclusive_until() {
    let log = history();
    let at = |seq: i64| Utc.timestamp_opt(T0 + seq, 0).single().expect("time");
    let window = log.seqs(AuditQuery {
        since: Some(at(3)),
        until: Some(at(6)),
        ..q()
    });
    assert_eq!(window, [3, 4, 5]);
    let since = log.seqs(AuditQuery {
        since: Some(at(14)),
        ..q()
    });
    assert_eq!(since, [14, 15]);
    assert!(
        log.seqs(AuditQuery {
            until: Some(at(1)),
            ..q()
        })
        .is_empty()
    );
}

/// Every page of `q`, following cursors, and the cursors seen.
fn all_pages(log: &Log, q: AuditQuery) -> (Vec<u64>, usize) {
    let mut seqs = Vec::new();
    let mut pages = 0;
    let mut cursor = None;
    loop {
        let page = log.audit.query(&AuditQuery {
            cursor,
            ..q.clone()
        });
        pages += 1;
        seqs.extend(page.entries.iter().map(|e| e.seq));
        match page.next {
            // The cursor travels as text.
            Some(c) => cursor = Some(Cursor::parse(&c.encode()).expect("round trip")),
            None => return (seqs, pages),
        }
    }
}

#[test]
fn pages_follow_each_other_in_both_orders() {
    let log = history();
    let asc = AuditQuery {
        limit: Some(4),
        order: Some(Order::Asc),
        ..q()
    };
    let (seqs, pages) = all_pages(&log, asc.clone());
    assert_eq!(seqs, (1..=15).collect::<Vec<_>>());
    assert_eq!(pages, 4);
    // Newest first is the default; the cursor carries the order, so it need not be repeated.
    let (seqs, _) = all_pages(
        &log,
        AuditQuery {
            limit: Some(4),
            ..q()
        },
    );
    assert_eq!(seqs, (1..=15).rev().collect::<Vec<_>>());
    // With filters, within a range: pages hold only matches; no cursor after the last one.
    let (seqs, pages) = all_pages(
        &log,
        AuditQuery {
            limit: Some(2),
            agent: Some("claude".into()),
            to: Some(13),
            ..q()
        },
    );
    assert_eq!(seqs, [13, 7, 6, 5]);
    assert_eq!(pages, 2);
    let exact = log.audit.query(&AuditQuery {
        limit: Some(5),
        agent: Some("claude".into()),
        ..q()
    });
    assert_eq!(exact.entries.len(), 5);
    assert_eq!(exact.next, None, "nothing more matches");
    // A page of one names the next entry.
    let first = log.audit.query(&AuditQuery {
        limit: Some(1),
        ..asc
    });
    assert_eq!(
        first.next,
        Some(Cursor {
            seq: 2,
            order: Order::Asc
        })
    );
}

#[test]
fn cursors_round_trip_and_foreign_ones_are_refused() {
    for c in [
        Cursor {
            seq: 1,
            order: Order::Asc,
        },
        Cursor {
            seq: u64::MAX,
            order: Order::Desc,
        },
    ] {
        let text = c.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "URL-safe: {text}"
        );
        assert_eq!(Cursor::parse(&text), Ok(c));
    }
    let b64 = |s: &str| URL_SAFE_NO_PAD.encode(s);
    for bad in [
        String::new(),
        "12".into(),
        "!!".into(),
        b64("x12"),
        b64("a"),
        b64("a0"),
        b64("a-1"),
        b64("a+1"),
        b64("a99999999999999999999999"),
    ] {
        let e = Cursor::parse(&bad).expect_err(&bad);
        assert!(e.to_string().contains("x-next-cursor"), "{e}");
    }
}

#[test]
fn state_holds_the_tags_and_a_rebuild_equals_it() {
    let log = history();
    let state = log.audit.state();
    assert_eq!(
        state[6],
        json!([
            7,
            (T0 + 7) * 1_000_000,
            "admin:1",
            "call.completed",
            "agent:claude",
            [
                "agent:claude",
                "connector:notion",
                "profile:support",
                "tool:notion__echo"
            ]
        ])
    );
    let mut again = AuditLog::default();
    for (r, e) in &log.records {
        again.apply(r, e);
    }
    assert_eq!(again.state(), state);
}

/// `audit replay` compares a copy of the live set with a rebuild. With rows on disk the copy
/// shares them with the live set, which keeps folding: the copy's state must stop at what it
/// folded itself, or a call recorded meanwhile makes a consistent log look inconsistent.
#[test]
fn a_copy_s_state_stops_at_what_it_folded_though_its_rows_are_shared_on_disk() {
    let log = history();
    let dir = tempfile::tempdir().unwrap();
    let mut live = AuditLog::default();
    live.attach(AuditIndex::open(&dir.path().join("audit-index"), 0).unwrap());
    let (first, rest) = log.records.split_at(8);
    for (r, e) in first {
        live.apply(r, e);
    }
    let copy = live.clone();
    let before = copy.state();
    for (r, e) in rest {
        live.apply(r, e);
    }
    assert_eq!(copy.state(), before);
    assert_eq!(before.as_array().unwrap().len(), 8);
    assert_eq!(live.state(), log.audit.state());
}

/// An archive run's marker prunes the calls it archived from the rows, on disk as in memory:
/// every query answers as before, the state is the same, and the index keeps only the rows
/// still listed.
#[test]
fn an_archive_run_prunes_the_rows_of_its_calls_and_no_answer_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = Log::default();
    log.audit
        .attach(AuditIndex::open(&dir.path().join("audit-index"), 0).unwrap());
    let mut memory = AuditLog::default();
    for (r, e) in &history().records {
        log.push(&r.stream, e.clone());
    }
    for _ in 0..1_000 {
        log.push(
            "calls-a1",
            started(("a1", "claude"), ("p1", "support"), "notion__echo"),
        );
    }
    let through = log.records.len() as u64 - 10;
    let marker = crate::domain::security::SecurityEvent::LogArchived {
        first_seq: 1,
        last_seq: through,
        last_hash: "h".into(),
        records: through,
        removed: 0,
        selector: vec!["call.".into()],
        segments: Vec::new(),
        agents_last_call: Default::default(),
        connectors_last_used: Default::default(),
    };
    let queries = [
        q(),
        AuditQuery {
            agent: Some("claude".into()),
            ..q()
        },
        AuditQuery {
            event_type: Some("call.".into()),
            ..q()
        },
        AuditQuery {
            event_type: Some("agent.".into()),
            ..q()
        },
    ];
    for (r, e) in &log.records {
        memory.apply(r, e);
    }
    log.push("log", AgpEvent::Security(marker));
    let (r, e) = log.records.last().unwrap();
    memory.apply(r, e);
    assert_eq!(log.audit.state(), memory.state());
    for query in queries {
        let seqs = |audit: &AuditLog| -> Vec<u64> {
            let query = AuditQuery {
                limit: Some(AuditLog::MAX_LIMIT),
                ..query.clone()
            };
            audit.query(&query).entries.iter().map(|e| e.seq).collect()
        };
        assert_eq!(seqs(&log.audit), seqs(&memory), "{query:?}");
    }
    // Kept: the history's events other than calls, its calls after `through`, and the marker.
    let kept = log
        .records
        .iter()
        .filter(|(r, _)| !(r.seq <= through && r.event_type.starts_with("call.")))
        .count();
    assert_eq!(memory.len(), kept);
    assert_eq!(log.audit.len(), kept);
    assert!(kept < 100, "{kept}");
}
