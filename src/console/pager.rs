//! Paging for the console's long lists (tools, profiles, agents).
//!
//! Lists are ordered by name, so a page is "the next `size` names after `after` that contain
//! `q`": a keyset cursor, stable while entries are added or removed, and cheap to follow on a
//! catalog of 100,000 tools. The filter is a case-insensitive substring of the name (and of
//! whatever else a page chooses to match on).

use maud::{Markup, html};
use serde::Deserialize;

/// `?q=…&after=…` as the pages take it.
#[derive(Debug, Default, Deserialize)]
pub struct Pager {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub after: Option<String>,
}

/// One page of a list and where the next one starts.
pub struct Page<T> {
    pub items: Vec<T>,
    /// The last name shown, when more matching entries follow it.
    pub next: Option<String>,
}

impl Pager {
    /// The first page of names containing `name` (to show a row just acted on).
    pub fn only(name: &str) -> Self {
        Self {
            q: name.to_string(),
            after: None,
        }
    }

    /// Whether `haystacks` match the filter (any of them contains it, case-insensitively).
    pub fn matches<'a>(&self, haystacks: impl IntoIterator<Item = &'a str>) -> bool {
        let q = self.q.trim();
        q.is_empty() || haystacks.into_iter().any(|h| contains_ignoring_case(h, q))
    }

    /// The page of `sorted` (ascending by `name`) after the cursor, keeping those `keep`
    /// accepts, at most `size` of them.
    pub fn page<T>(
        &self,
        sorted: impl IntoIterator<Item = T>,
        name: impl Fn(&T) -> &str,
        keep: impl Fn(&T) -> bool,
        size: usize,
    ) -> Page<T> {
        let after = self.after.as_deref().filter(|a| !a.is_empty());
        let mut items = Vec::with_capacity(size.min(256));
        let mut more = false;
        for item in sorted {
            if after.is_some_and(|a| name(&item) <= a) || !keep(&item) {
                continue;
            }
            if items.len() == size {
                more = true;
                break;
            }
            items.push(item);
        }
        let next = if more {
            items.last().map(|i| name(i).to_string())
        } else {
            None
        };
        Page { items, next }
    }

    /// The filter box and the links to the first and the next page, for the list at `path`.
    pub fn nav(&self, path: &str, what: &str, shown: usize, next: Option<&str>) -> Markup {
        let q = self.q.trim();
        let paged = self.after.as_deref().is_some_and(|a| !a.is_empty());
        html! {
            form.row.pager method="get" action=(path) role="search" {
                input type="search" name="q" value=(q) placeholder={"Filter " (what) " by name"}
                    aria-label={"Filter " (what)};
                button type="submit" { "Filter" }
                span.hint { (shown) " shown" @if paged { ", after " (self.after.as_deref().unwrap_or_default()) } }
                span.spacer {}
                @if paged || !q.is_empty() {
                    a href=(path) { "First page" }
                }
                @if let Some(next) = next {
                    a rel="next" href={(path) "?" (query(q, next))} { "Next page" }
                }
            }
        }
    }
}

/// Whether `haystack` contains `needle`, ignoring case; without allocating for ASCII needles
/// (a filter scans every name of a 100,000-tool catalog).
fn contains_ignoring_case(haystack: &str, needle: &str) -> bool {
    if needle.is_ascii() {
        let n = needle.as_bytes();
        return haystack
            .as_bytes()
            .windows(n.len())
            .any(|w| w.eq_ignore_ascii_case(n));
    }
    haystack.to_lowercase().contains(&needle.to_lowercase())
}

/// `q=…&after=…`, form-encoded.
fn query(q: &str, after: &str) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .append_pair("q", q)
        .append_pair("after", after)
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("tool{i:03}")).collect()
    }

    #[test]
    fn pages_follow_each_other_without_gaps_or_repeats() {
        let all = names(25);
        let mut pager = Pager::default();
        let mut seen = Vec::new();
        loop {
            let page = pager.page(all.iter(), |s| s.as_str(), |_| true, 10);
            seen.extend(page.items.iter().map(|s| s.to_string()));
            match page.next {
                Some(next) => pager.after = Some(next),
                None => break,
            }
        }
        assert_eq!(seen, all);
    }

    #[test]
    fn an_exact_page_has_no_next() {
        let all = names(10);
        let page = Pager::default().page(all.iter(), |s| s.as_str(), |_| true, 10);
        assert_eq!(page.items.len(), 10);
        assert!(page.next.is_none());
    }

    #[test]
    fn the_filter_is_a_case_insensitive_substring() {
        let pager = Pager {
            q: " TOOL01".into(),
            after: None,
        };
        let all = names(25);
        let page = pager.page(
            all.iter(),
            |s| s.as_str(),
            |s| pager.matches([s.as_str()]),
            100,
        );
        let got: Vec<_> = page.items.iter().map(|s| s.as_str()).collect();
        assert_eq!(
            got,
            (10..20).map(|i| format!("tool{i:03}")).collect::<Vec<_>>()
        );
    }

    #[test]
    fn case_is_ignored_for_any_needle() {
        assert!(contains_ignoring_case("notion__Create_Page", "create_p"));
        assert!(!contains_ignoring_case("notion__echo", "create"));
        assert!(contains_ignoring_case("Grüße", "GRÜ"));
        assert!(!contains_ignoring_case("ab", "abc"));
    }

    #[test]
    fn the_next_link_keeps_the_filter_and_escapes_it() {
        let pager = Pager {
            q: "a&b".into(),
            after: None,
        };
        let html = pager
            .nav("/console/tools", "tools", 1, Some("x y"))
            .into_string();
        assert!(
            html.contains("href=\"/console/tools?q=a%26b&amp;after=x+y\""),
            "{html}"
        );
    }
}
