//! What the process-level benchmarks (`proxy`, `catalog_memory`) share: env knobs, medians, and
//! the release `agp serve` binary run as a separate process on a free loopback port, with its
//! readiness, resident memory and CPU time read from `/proc`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// `name` parsed as a u64, or `default` when unset or unparsable.
pub fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of `v` (the upper one for an even count); NaN for none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// A loopback port free right now (another process could take it before we bind it again; the
/// start then fails loudly).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The status code of `GET path` on `127.0.0.1:port`, or `None` when nothing answers.
pub fn http_status(port: u16, path: &str) -> Option<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Ok(n) if n >= 12 => std::str::from_utf8(&buf[9..12]).ok()?.parse().ok(),
        _ => None,
    }
}

/// One field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`), as MiB; NaN if unreadable.
pub fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// `agp serve` (the release binary Cargo built for this bench) in its own process.
pub struct Agp {
    child: Child,
    pub port: u16,
    pub data_dir: PathBuf,
    /// From spawn until `/readyz` first answered 200.
    pub start_to_ready: Duration,
}

impl Agp {
    /// Starts `agp serve --listen 127.0.0.1:<free port> --data-dir <data_dir> <extra>` with
    /// `AGP_LOG=warn` and `env` and waits up to `timeout` for `/readyz` 200.
    pub fn start(
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
        timeout: Duration,
    ) -> anyhow::Result<Agp> {
        let port = free_port()?;
        let started = Instant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_agp"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(data_dir)
            .args(extra)
            .env("AGP_LOG", "warn")
            .env_remove("AGP_ADMIN_TOKEN")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting agp serve")?;
        let deadline = started + timeout;
        while http_status(port, "/readyz") != Some(200) {
            if let Some(status) = child.try_wait()? {
                bail!("agp serve exited early: {status}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("agp serve was not ready within {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(Agp {
            start_to_ready: started.elapsed(),
            child,
            port,
            data_dir: data_dir.to_path_buf(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Resident memory now, MiB.
    pub fn rss_mib(&self) -> f64 {
        status_mib(self.pid(), "VmRSS:")
    }

    /// The admin token `agp serve` created in its data directory.
    pub fn admin_token(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(self.data_dir.join("admin.token"))
            .context("reading admin.token")?
            .trim()
            .to_string())
    }

    /// SIGTERM (a graceful stop, closing the log cleanly) and wait.
    pub fn stop(mut self) -> anyhow::Result<()> {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Agp {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
