//! Audit queries: filters, the time window, and paging with an opaque cursor.
//!
//! A page is at most `limit` matching entries in the query's order; when more match, the page
//! carries a [`Cursor`] naming the first entry of the next page and the order it runs in. The
//! cursor is a position, not a snapshot: entries appended after the first page show up on a
//! later page of an ascending query, and never shift a descending one (new entries are above
//! the position it continues from).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

use super::rows::Scan;
use super::{AuditEntry, AuditLog};

/// Above this many matching classes a query scans rows in order instead of merging postings.
const MERGE_CLASSES: usize = 512;

/// Which way a query walks the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    Asc,
    /// Newest first (the default).
    #[default]
    Desc,
}

impl Order {
    pub fn as_str(self) -> &'static str {
        match self {
            Order::Asc => "asc",
            Order::Desc => "desc",
        }
    }
}

/// Where the next page starts: the seq of its first entry, and the order of the query that
/// made it. Clients see it only encoded ([`Cursor::encode`]), as `x-next-cursor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub seq: u64,
    pub order: Order,
}

/// A cursor that this server did not issue. Surfaces as HTTP 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "cursor {0:?} is not one this server issued: pass the x-next-cursor of a previous page unchanged"
)]
pub struct CursorError(String);

impl Cursor {
    /// The opaque form: base64url of `a<seq>` or `d<seq>`.
    pub fn encode(&self) -> String {
        let tag = match self.order {
            Order::Asc => 'a',
            Order::Desc => 'd',
        };
        URL_SAFE_NO_PAD.encode(format!("{tag}{}", self.seq))
    }

    pub fn parse(s: &str) -> Result<Self, CursorError> {
        // Echo at most a short prefix of what was sent.
        let bad = || CursorError(s.chars().take(40).collect());
        let raw = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        let text = std::str::from_utf8(&raw).map_err(|_| bad())?;
        let (order, digits) = match text.split_at_checked(1) {
            Some(("a", d)) => (Order::Asc, d),
            Some(("d", d)) => (Order::Desc, d),
            _ => return Err(bad()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        let seq: u64 = digits.parse().map_err(|_| bad())?;
        if seq == 0 {
            return Err(bad());
        }
        Ok(Cursor { seq, order })
    }
}

/// Filters for [`AuditLog::query`]. Empty filters match everything; a filter naming something
/// never seen matches nothing.
#[derive(Debug, Default, Clone)]
pub struct AuditQuery {
    /// Exact actor, e.g. `admin:1a2b3c4d`.
    pub actor: Option<String>,
    /// Exact type, or a prefix ending in `.` (e.g. `connector.`).
    pub event_type: Option<String>,
    /// Exact subject label (`connector:<name>`, …).
    pub subject: Option<String>,
    /// Entries concerning this agent, profile, tool, connector or approval (by name; id for
    /// approvals): see [`super::tags`].
    pub agent: Option<String>,
    pub profile: Option<String>,
    pub tool: Option<String>,
    pub connector: Option<String>,
    pub approval: Option<String>,
    /// Only entries with `time >= since`.
    pub since: Option<DateTime<Utc>>,
    /// Only entries with `time < until`.
    pub until: Option<DateTime<Utc>>,
    /// Only entries with `seq >= from`.
    pub from: Option<u64>,
    /// Only entries with `seq <= to`.
    pub to: Option<u64>,
    /// At most this many (default 100, at least 1, at most 10,000).
    pub limit: Option<usize>,
    /// Default: the cursor's order, else newest first.
    pub order: Option<Order>,
    /// Continue where a previous page stopped.
    pub cursor: Option<Cursor>,
}

/// One page of entries, and where the next one starts (`None`: nothing more matches).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    pub next: Option<Cursor>,
}

impl AuditLog {
    /// Entries matching `q`, one page in `q`'s order.
    pub fn query(&self, q: &AuditQuery) -> AuditPage {
        let limit = q
            .limit
            .unwrap_or(Self::DEFAULT_LIMIT)
            .clamp(1, Self::MAX_LIMIT);
        let order = q.order.or(q.cursor.map(|c| c.order)).unwrap_or_default();
        // A filter naming a string never seen matches nothing.
        let resolve = |s: &Option<String>| match s {
            None => Ok(None),
            Some(s) => self.strings.find(s).map(Some).ok_or(()),
        };
        let (Ok(actor), Ok(subject)) = (resolve(&q.actor), resolve(&q.subject)) else {
            return AuditPage::default();
        };
        let mut required = Vec::new();
        for (kind, value) in [
            ("agent", &q.agent),
            ("profile", &q.profile),
            ("tool", &q.tool),
            ("connector", &q.connector),
            ("approval", &q.approval),
        ] {
            if let Some(v) = value {
                match self.strings.find(&format!("{kind}:{v}")) {
                    Some(t) => required.push(t),
                    None => return AuditPage::default(),
                }
            }
        }
        let tagged = (!required.is_empty()).then(|| self.tagger.sets.holding_all(&required));
        let type_filter = q.event_type.as_deref();
        let since = q.since.map_or(i64::MIN, |t| t.timestamp_micros());
        let until = q.until.map_or(i64::MAX, |t| t.timestamp_micros());

        let mut from = q.from.unwrap_or(0);
        let mut to = q.to.unwrap_or(u64::MAX);
        match (q.cursor, order) {
            (Some(c), Order::Asc) => from = from.max(c.seq),
            (Some(c), Order::Desc) => to = to.min(c.seq),
            (None, _) => {}
        }
        // Which classes match: the filters other than time and position.
        let classes: Vec<bool> = self
            .classes
            .iter()
            .map(|c| {
                actor.is_none_or(|a| c.actor == a)
                    && subject.is_none_or(|s| c.subject == s)
                    && tagged
                        .as_ref()
                        .is_none_or(|t| t.get(c.tags as usize).copied().unwrap_or(false))
                    && type_filter.is_none_or(|t| {
                        let et = self.strings.get(c.event_type);
                        if t.ends_with('.') {
                            et.starts_with(t)
                        } else {
                            et == t
                        }
                    })
            })
            .collect();
        let matching = classes.iter().filter(|m| **m).count();
        if matching == 0 {
            return AuditPage::default();
        }
        // A few classes: read their postings; many: scan the rows.
        let only = (matching < classes.len() && matching <= MERGE_CLASSES).then(|| {
            (0u32..)
                .zip(&classes)
                .filter(|(_, m)| **m)
                .map(|(i, _)| i)
                .collect()
        });
        let archived = self.archived_classes();
        let scan = Scan {
            from,
            to,
            since,
            until,
            classes: &classes,
            only,
            descending: order == Order::Desc,
            archived_through: self.archived_through,
            archived: &archived,
        };
        match self.rows.scan(&scan, limit) {
            Ok((picked, next)) => AuditPage {
                entries: picked.iter().map(|r| self.render(r)).collect(),
                next: next.map(|seq| Cursor { seq, order }),
            },
            Err(e) => {
                tracing::error!(error = %e, "reading the audit index failed");
                AuditPage::default()
            }
        }
    }
}
