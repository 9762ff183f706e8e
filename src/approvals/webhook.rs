//! `--approval-webhook URL`: each new approval request is POSTed there as JSON, so approvers
//! hear of it without polling. Through the egress guard (S3) like every request AGP makes on
//! an admin's behalf; never the argument values (only their hash); a few retries, then a
//! warning — a webhook that is down never holds a call up.

use std::time::Duration;

use serde_json::json;
use url::Url;

use crate::oauth::egress::EgressClient;
use crate::projections::approvals::ApprovalView;

pub struct Webhook {
    egress: EgressClient,
    url: Url,
    public_url: String,
}

/// Attempts per announcement, and the pause before each retry (doubling).
const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

impl Webhook {
    pub fn new(egress: EgressClient, url: Url, public_url: &str) -> Self {
        Self {
            egress,
            url,
            public_url: public_url.trim_end_matches('/').to_string(),
        }
    }

    /// The JSON body announcing `view`: what the request is about, never argument values.
    pub fn body(&self, view: &ApprovalView) -> serde_json::Value {
        json!({
            "type": "approval.requested",
            "approval_id": view.id,
            "agent": view.agent,
            "profile": view.profile,
            "tool": view.tool,
            "connector": view.connector,
            "operation": view.operation,
            "arguments_sha256": view.arguments_sha256,
            "requested_at": view.requested_at,
            "expires_at": view.expires_at,
            "approval_url": format!("{}/api/v1/approvals/{}", self.public_url, view.id),
        })
    }

    /// Sends the announcement in the background.
    pub fn announce(&self, view: &ApprovalView) {
        let (egress, url, body) = (self.egress.clone(), self.url.clone(), self.body(view));
        let id = view.id.clone();
        tokio::spawn(async move {
            let mut pause = FIRST_PAUSE;
            for attempt in 1..=ATTEMPTS {
                let sent = match egress.post(&url) {
                    Ok(r) => r.json(&body).send().await.map(|r| r.status().as_u16()),
                    Err(e) => Err(e),
                };
                match sent {
                    Ok(s) if (200..300).contains(&s) => return,
                    Ok(s) => {
                        tracing::warn!(approval = %id, attempt, status = s, "approval webhook refused the announcement")
                    }
                    Err(e) => {
                        tracing::warn!(approval = %id, attempt, error = %e, "approval webhook unreachable")
                    }
                }
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        });
    }
}
