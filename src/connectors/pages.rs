//! The human-readable result page shown after the consent callback (also used by the console).
//! Everything from the provider is escaped and truncated; nothing is ever rendered as a link.

/// Longest provider-supplied text shown on a page.
pub const MAX_SHOWN: usize = 300;

/// Escapes and truncates untrusted text for an HTML body: control characters dropped, at most
/// [`MAX_SHOWN`] characters.
pub fn untrusted(s: &str) -> String {
    let clean: String = s
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_SHOWN)
        .collect();
    html_escape::encode_text(&clean).into_owned()
}

/// The outcome of a consent flow as a page.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The connector is active. `account` and scopes as the provider reported them.
    Authorized {
        connector: String,
        account: Option<String>,
        scopes: Vec<String>,
    },
    /// The flow failed; `reason` is shown escaped.
    Failed {
        connector: Option<String>,
        reason: String,
    },
}

/// Renders `outcome` as a small, self-contained HTML page (no scripts, no external assets).
pub fn render(outcome: &Outcome) -> String {
    let (title, body, class) = match outcome {
        Outcome::Authorized {
            connector,
            account,
            scopes,
        } => {
            let account = account
                .as_deref()
                .map(|a| {
                    format!(
                        "<p>Authorized account: <strong>{}</strong></p>",
                        untrusted(a)
                    )
                })
                .unwrap_or_default();
            let scopes = if scopes.is_empty() {
                String::new()
            } else {
                let chips: Vec<String> = scopes
                    .iter()
                    .map(|s| format!("<span class=\"chip\">{}</span>", untrusted(s)))
                    .collect();
                format!("<p>Granted scopes: {}</p>", chips.join(" "))
            };
            (
                "Connector authorized".to_string(),
                format!(
                    "<p>The connector <strong>{}</strong> is now <strong>active</strong>.</p>{account}{scopes}<p>You can close this tab.</p>",
                    untrusted(connector)
                ),
                "ok",
            )
        }
        Outcome::Failed { connector, reason } => {
            let which = connector
                .as_deref()
                .map(|c| format!(" for <strong>{}</strong>", untrusted(c)))
                .unwrap_or_default();
            (
                "Authorization failed".to_string(),
                format!(
                    "<p>Authorization{which} did not complete.</p><p class=\"reason\">{}</p><p>Start again with <code>agp connectors reconnect</code>.</p>",
                    untrusted(reason)
                ),
                "failed",
            )
        }
    };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"referrer\" content=\"no-referrer\"><title>AGP — {title}</title><style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem}}.ok h1{{color:#146c2e}}.failed h1{{color:#a4161a}}.chip{{display:inline-block;border:1px solid #999;border-radius:1rem;padding:0 .6rem;margin:.1rem}}.reason{{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}}</style></head><body class=\"{class}\" data-outcome=\"{class}\"><h1>{title}</h1>{body}</body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_text_is_escaped_truncated_and_never_a_link() {
        let page = render(&Outcome::Failed {
            connector: Some("notion".into()),
            reason: format!(
                "access_denied: <a href=\"https://evil.example\">click</a><script>alert(1)</script>\u{7}{}",
                "x".repeat(1000)
            ),
        });
        assert!(!page.contains("<a "));
        assert!(!page.contains("<script>"));
        assert!(page.contains("&lt;a href="));
        assert!(!page.contains(&"x".repeat(400)));
        assert!(page.contains("data-outcome=\"failed\""));
    }

    #[test]
    fn success_page_names_connector_account_and_scopes() {
        let page = render(&Outcome::Authorized {
            connector: "notion".into(),
            account: Some("ops@example.com".into()),
            scopes: vec!["read".into(), "write".into()],
        });
        assert!(page.contains("<strong>notion</strong>"));
        assert!(page.contains("ops@example.com"));
        assert!(page.contains("<span class=\"chip\">write</span>"));
    }
}
