//! `--before SEQ|TIME`: where an archive run stops, as operators write it.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// Records an archive run may take: those before a seq, or appended before a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    /// Records with a smaller seq.
    Seq(u64),
    /// Records appended before this time.
    Time(DateTime<Utc>),
    /// Records older than this, when the run starts.
    Age(Duration),
}

/// A `--before` that is none of the three forms. Surfaces as HTTP 400 / a usage error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "--before {0:?}: expected a seq (e.g. 120000), an RFC 3339 time (e.g. 2026-01-31T00:00:00Z) \
     or an age (e.g. 30d, 12h, 90m, 3600s)"
)]
pub struct BeforeError(String);

impl std::str::FromStr for Before {
    type Err = BeforeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || BeforeError(s.chars().take(64).collect());
        let s = s.trim();
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse().map(Before::Seq).map_err(|_| bad());
        }
        if let Some(age) = parse_duration(s) {
            return Ok(Before::Age(age));
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Before::Time(t.to_utc()))
            .map_err(|_| bad())
    }
}

impl Before {
    /// The seq and time bounds this stands for at `now`.
    pub fn bounds(self, now: DateTime<Utc>) -> (Option<u64>, Option<DateTime<Utc>>) {
        match self {
            Before::Seq(s) => (Some(s), None),
            Before::Time(t) => (None, Some(t)),
            Before::Age(age) => (
                None,
                Some(
                    chrono::Duration::from_std(age)
                        .ok()
                        .and_then(|d| now.checked_sub_signed(d))
                        .unwrap_or(DateTime::<Utc>::MIN_UTC),
                ),
            ),
        }
    }
}

/// `30d`, `12h`, `90m`, `3600s`, `0s`: a whole number and one unit.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let unit = s.chars().last()?;
    let secs_per = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    let n: u64 = s[..s.len() - 1].parse().ok()?;
    n.checked_mul(secs_per).map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_forms_parse_and_nothing_else() {
        assert_eq!("120".parse(), Ok(Before::Seq(120)));
        assert_eq!(
            "30d".parse(),
            Ok(Before::Age(Duration::from_secs(30 * 86_400)))
        );
        assert_eq!("90m".parse(), Ok(Before::Age(Duration::from_secs(5_400))));
        let t: Before = "2026-01-31T01:00:00+01:00".parse().expect("time");
        assert_eq!(
            t,
            Before::Time(
                DateTime::parse_from_rfc3339("2026-01-31T00:00:00Z")
                    .expect("time")
                    .to_utc()
            )
        );
        for bad in [
            "",
            "-1",
            "30x",
            "d",
            "1.5h",
            "yesterday",
            "99999999999999999999",
        ] {
            assert!(bad.parse::<Before>().is_err(), "{bad}");
        }
        let now = Utc::now();
        assert_eq!(
            Before::Age(Duration::from_secs(60)).bounds(now),
            (None, Some(now - chrono::Duration::seconds(60)))
        );
    }
}
