//! `agp serve`: logging set-up, configuration, start, and shutdown on SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;

use super::{Global, ServeArgs};
use crate::app::data_dir::admin_token_path;
use crate::app::{Application, Config};

pub async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<ExitCode> {
    let telemetry = super::telemetry::init(args.log_format, args.otlp_endpoint.as_ref())?;
    // Installed before anything else so a SIGTERM at any point after start is a graceful stop.
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut config = Config::new(
        global.data_dir.clone(),
        &args.listen,
        args.public_url.as_deref(),
    )?;
    config.egress_allow = args.egress_allow.clone();
    config.proxy.call_timeout = std::time::Duration::from_secs(args.call_timeout);
    config.proxy.session_idle = std::time::Duration::from_secs(args.mcp_session_idle);
    config.proxy.agent_concurrency = usize::try_from(args.agent_concurrency).unwrap_or(usize::MAX);
    config.relist_every = std::time::Duration::from_secs(args.relist_every);
    config.refresh_every = std::time::Duration::from_secs(args.refresh_every);
    config.approvals.wait = std::time::Duration::from_secs(args.approval_wait);
    config.approvals.ttl = std::time::Duration::from_secs(args.approval_ttl);
    config.approvals.webhook = args.approval_webhook.clone();
    config.durability = args.durability;
    config.checkpoint_every = std::time::Duration::from_secs(args.checkpoint_every);
    config.checkpoint_file = args.checkpoint_file.clone();
    config.checkpoint_webhook = args.checkpoint_webhook.clone();
    config.master_key_file = args
        .master_key_file
        .clone()
        .filter(|p| !p.as_os_str().is_empty());
    config.archive_dir = global.archive_dir.clone();
    config.archive_after = args.archive_after;
    config.archive_min_age = args.archive_min_age;
    config.database = args.database.options();
    let huge_pages = args.huge_pages || !refuse_huge_pages();
    let app = Application::build(config.clone()).await?;
    let token_path = admin_token_path(&config.data_dir);
    if app.admin_token_created {
        tracing::info!(path = %token_path.display(), "created the admin token (mode 0600); admin commands read it from there");
    } else {
        tracing::info!(path = %token_path.display(), "admin token");
    }
    tracing::info!(
        listen = %config.listen,
        port = app.port(),
        public_url = %app.state().public_url,
        data_dir = %config.data_dir.display(),
        worker_threads = tokio::runtime::Handle::current().metrics().num_workers(),
        huge_pages,
        durability = config.durability.as_str(),
        store = if config.database.is_some() { "postgresql" } else { "embedded" },
        "AGP is ready"
    );
    let served = app.run_until(shutdown_signal(term)).await;
    telemetry.shutdown().await;
    served.context("server stopped")?;
    Ok(ExitCode::SUCCESS)
}

/// Stops the kernel from backing this process's memory with transparent huge pages, for every
/// page it faults in from now on. False if it could not (then the system's setting applies).
///
/// The allocator asks for huge pages on its arenas, so where the system grants them on request
/// (THP `madvise`, a common default) the first touch of fresh memory zeroes 2 MiB at once. The
/// event log's writer allocates as it commits, and such a fault inside a commit delays every
/// call waiting for that record: on the reference machine the added p99 per proxied call fell
/// from +1,379 µs to +937 µs without them (decision 0009).
#[cfg(target_os = "linux")]
fn refuse_huge_pages() -> bool {
    match rustix::thread::disable_transparent_huge_pages(true) {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "could not turn transparent huge pages off for AGP");
            false
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn refuse_huge_pages() -> bool {
    false
}

async fn shutdown_signal(mut term: tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}
