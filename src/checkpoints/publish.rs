//! Where checkpoints go besides the caller: `--checkpoint-file` (JSON lines, appended and
//! synced) and `--checkpoint-webhook` (POSTed through the egress guard, S3, with a few retries),
//! and the periodic task behind `--checkpoint-every`.
//!
//! A sink that fails is logged and never fails the checkpoint: the caller has it either way.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use url::Url;

use super::Checkpointer;
use crate::oauth::egress::EgressClient;
use crate::store::checkpoint::Checkpoint;

/// Attempts per webhook delivery, and the pause before each retry (doubling).
const ATTEMPTS: u32 = 3;
const FIRST_PAUSE: Duration = Duration::from_millis(500);

/// The configured destinations of every checkpoint AGP makes.
#[derive(Default)]
pub struct Sinks {
    pub file: Option<PathBuf>,
    pub webhook: Option<(EgressClient, Url)>,
}

impl Sinks {
    pub(super) async fn publish(&self, checkpoint: &Checkpoint) {
        if let Some(path) = self.file.clone() {
            let line = match serde_json::to_string(checkpoint) {
                Ok(line) => line,
                Err(e) => {
                    tracing::error!(error = %e, "encoding a checkpoint");
                    return;
                }
            };
            let written = tokio::task::spawn_blocking(move || append_line(&path, &line)).await;
            match written {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(error = %e, "writing the checkpoint file"),
                Err(e) => tracing::error!(error = %e, "checkpoint file task"),
            }
        }
        if let Some((egress, url)) = &self.webhook {
            deliver(egress.clone(), url.clone(), checkpoint.clone());
        }
    }
}

/// Appends one line to `path` (created 0644 if missing) and syncs it.
fn append_line(path: &std::path::Path, line: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    f.write_all(format!("{line}\n").as_bytes())?;
    f.sync_data()
}

/// POSTs the checkpoint (its JSON, plus `"type": "audit.checkpoint"`) in the background.
fn deliver(egress: EgressClient, url: Url, checkpoint: Checkpoint) {
    tokio::spawn(async move {
        let mut body = serde_json::to_value(&checkpoint).unwrap_or_default();
        if let Some(obj) = body.as_object_mut() {
            obj.insert("type".into(), "audit.checkpoint".into());
        }
        let target = crate::oauth::egress::redacted(&url);
        let mut pause = FIRST_PAUSE;
        for attempt in 1..=ATTEMPTS {
            let sent = match egress.post(&url) {
                Ok(r) => r.json(&body).send().await.map(|r| r.status().as_u16()),
                Err(e) => Err(e),
            };
            match sent {
                Ok(s) if (200..300).contains(&s) => return,
                Ok(s) => {
                    tracing::warn!(seq = checkpoint.seq, url = %target, attempt, status = s, "checkpoint webhook refused the checkpoint")
                }
                Err(e) => {
                    tracing::warn!(seq = checkpoint.seq, url = %target, attempt, error = %e, "checkpoint webhook unreachable")
                }
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    });
}

/// Makes a checkpoint every `every` until `shutdown` turns true, skipping a round when the head
/// has not moved since the last one this task made. Among replicas, only the leader makes them.
pub fn spawn_periodic(
    checkpointer: Arc<Checkpointer>,
    every: Duration,
    cluster: Arc<crate::cluster::Cluster>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    tokio::spawn(async move {
        let mut last: Option<u64> = None;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => {}
            }
            if *shutdown.borrow() {
                return;
            }
            if !cluster.leads() {
                continue;
            }
            let head = checkpointer.log.head();
            if last == Some(head) {
                continue;
            }
            match checkpointer.create().await {
                Ok(cp) => last = Some(cp.seq),
                Err(e) => tracing::error!(error = %e, "periodic audit checkpoint failed"),
            }
        }
    });
}
