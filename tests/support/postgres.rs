//! A real PostgreSQL server for tests and benchmarks, never a mock: `initdb` into a temporary
//! directory, `postgres` on a free port of 127.0.0.1 (its unix socket in that directory too),
//! stopped and removed when the [`TempPostgres`] is dropped.
//!
//! The binaries are Debian's `postgresql` package's (`.ci/run` and `tools/test` install it when
//! missing): found through `AGP_PG_BINDIR`, `pg_config --bindir`, or the newest
//! `/usr/lib/postgresql/*/bin`. `initdb` refuses to run as root, and CI runs as root: then both
//! it and the server run as the `postgres` user (or `nobody` where there is none), through
//! util-linux's `setpriv`, and the directory is handed to that user. The server is started
//! with `--pdeathsig KILL` from a thread that lives as long as it does, so a test process that
//! dies without dropping it (a panic in another thread aborting, `kill -9`) takes its server
//! along instead of leaving it running.
//!
//! Included by path (`#[path = ...]`) from tests and from `benches/store.rs`.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// The database role the servers are created with (trust authentication, on loopback only).
pub const SUPERUSER: &str = "agp";

/// A user to run PostgreSQL as, when this process is root.
#[derive(Debug, Clone)]
struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

/// A running, throw-away PostgreSQL server.
pub struct TempPostgres {
    dir: tempfile::TempDir,
    bindir: PathBuf,
    run_as: Option<RunAs>,
    port: u16,
    /// The server's pid and the thread that waits for it.
    server: Option<(u32, std::thread::JoinHandle<()>)>,
}

impl TempPostgres {
    /// initdb, then start the server and wait until it accepts connections.
    pub fn start() -> anyhow::Result<Self> {
        let bindir = bindir()?;
        let run_as = if is_root()? {
            Some(unprivileged_user()?)
        } else {
            None
        };
        let dir = tempfile::Builder::new().prefix("agp-pg-").tempdir()?;
        if let Some(user) = &run_as {
            std::os::unix::fs::chown(dir.path(), Some(user.uid), Some(user.gid))
                .with_context(|| format!("handing {} to {}", dir.path().display(), user.name))?;
        }
        let mut pg = Self {
            dir,
            bindir,
            run_as,
            port: 0,
            server: None,
        };
        let out = pg
            .command("initdb")
            .args(["-D"])
            .arg(pg.data_dir())
            .args([
                "-A",
                "trust",
                "-U",
                SUPERUSER,
                "-E",
                "UTF8",
                "--locale=C",
                "-N",
            ])
            .output()
            .context("running initdb")?;
        if !out.status.success() {
            bail!(
                "initdb failed ({}): {}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        pg.boot()?;
        Ok(pg)
    }

    /// A connection URL for `database` on this server.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://{SUPERUSER}@127.0.0.1:{}/{database}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs SQL as the superuser on `database` through psql.
    pub fn psql(&self, database: &str, sql: &str) -> anyhow::Result<String> {
        let out = Command::new(self.bindir.join("psql"))
            .args([
                "-X",
                "-q",
                "-t",
                "-A",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
            ])
            .args([
                "-p",
                &self.port.to_string(),
                "-U",
                SUPERUSER,
                "-d",
                database,
                "-c",
                sql,
            ])
            .stdin(Stdio::null())
            .output()
            .context("running psql")?;
        if !out.status.success() {
            bail!(
                "psql {sql:?} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Creates a database (UTF8) and returns its URL.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        self.psql(
            "postgres",
            &format!("CREATE DATABASE \"{name}\" ENCODING 'UTF8'"),
        )?;
        Ok(self.url(name))
    }

    /// Stops the server (fast shutdown: connections are cut, nothing committed is lost).
    pub fn stop(&mut self) -> anyhow::Result<()> {
        self.signal("-INT")
    }

    /// Sends the postmaster `signal` and waits until it exited.
    fn signal(&mut self, signal: &str) -> anyhow::Result<()> {
        let Some((pid, waiter)) = self.server.take() else {
            return Ok(());
        };
        if waiter.is_finished() {
            let _ = waiter.join();
            return Ok(());
        }
        let signalled = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .context("running kill")?;
        if !signalled.success() {
            bail!("kill {signal} {pid} failed");
        }
        waiter
            .join()
            .map_err(|_| anyhow::anyhow!("the server's waiting thread panicked"))?;
        Ok(())
    }

    /// Crashes the server: an immediate shutdown (SIGQUIT) aborts every server process at
    /// once, without writing what is only in shared memory, as a crash would; the next start
    /// runs crash recovery from the WAL on disk.
    pub fn crash(&mut self) -> anyhow::Result<()> {
        self.signal("-QUIT")
    }

    /// Turns TLS on with a throw-away certificate for 127.0.0.1 (made by openssl) and refuses
    /// every TCP connection without TLS; restarts the server. Returns the certificate's path:
    /// the one certificate a client must trust.
    pub fn require_tls(&mut self) -> anyhow::Result<PathBuf> {
        let (cert, key) = self_signed_certificate(self.dir.path())?;
        std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        if let Some(user) = &self.run_as {
            for f in [&cert, &key] {
                std::os::unix::fs::chown(f, Some(user.uid), Some(user.gid))?;
            }
        }
        let conf = self.data_dir().join("postgresql.conf");
        let mut settings = std::fs::read_to_string(&conf)?;
        settings.push_str(&format!(
            "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
            cert.display(),
            key.display()
        ));
        std::fs::write(&conf, settings)?;
        let hba = self.data_dir().join("pg_hba.conf");
        let rules = std::fs::read_to_string(&hba)?;
        std::fs::write(
            &hba,
            format!("hostnossl all all 127.0.0.1/32 reject\n{rules}"),
        )?;
        self.restart()?;
        Ok(cert)
    }

    /// Starts the stopped server again on the same port and data.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?; // a no-op when it is not running
        self.spawn(self.port)?;
        self.wait_ready(self.port)
    }

    /// The server's data directory (tests read its files to check what a deletion left).
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn log_file(&self) -> PathBuf {
        self.dir.path().join("postgres.log")
    }

    /// A command for one of the server's binaries, as the unprivileged user when root.
    fn command(&self, binary: &str) -> Command {
        let program = self.bindir.join(binary);
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--clear-groups")
                    .arg(program);
                c
            }
            None => Command::new(program),
        };
        cmd.current_dir(self.dir.path()).stdin(Stdio::null());
        cmd
    }

    /// Starts the server on a free port, retrying with another if the port was taken meanwhile.
    fn boot(&mut self) -> anyhow::Result<()> {
        let mut last = None;
        for _ in 0..5 {
            let port = free_port()?;
            self.spawn(port)?;
            match self.wait_ready(port) {
                Ok(()) => {
                    self.port = port;
                    return Ok(());
                }
                Err(e) => {
                    let _ = self.stop();
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("PostgreSQL did not start")))
    }

    fn spawn(&mut self, port: u16) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_file())?;
        let mut cmd = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={}", user.uid))
                    .arg(format!("--regid={}", user.gid))
                    .arg("--clear-groups");
                c
            }
            None => Command::new("setpriv"),
        };
        cmd.args(["--pdeathsig", "KILL"])
            .arg(self.bindir.join("postgres"))
            .arg("-D")
            .arg(self.data_dir())
            .args(["-p", &port.to_string(), "-k"])
            .arg(self.dir.path())
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=200"])
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // The server is the child of a thread that waits for it as long as it runs, so the
        // parent-death signal fires when the process dies, not when a test's thread ends.
        let (pid_tx, pid_rx) = mpsc::channel();
        let waiter = std::thread::Builder::new()
            .name(format!("postgres-{port}"))
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = pid_tx.send(Ok(child.id()));
                    let _ = child.wait();
                }
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                }
            })?;
        let pid = pid_rx
            .recv()
            .context("the server's thread ended")?
            .context("starting postgres (is util-linux's setpriv installed?)")?;
        self.server = Some((pid, waiter));
        Ok(())
    }

    fn wait_ready(&self, port: u16) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = Command::new(self.bindir.join("pg_isready"))
                .args([
                    "-q",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-U",
                    SUPERUSER,
                ])
                .status()
                .context("running pg_isready")?;
            if ready.success() {
                return Ok(());
            }
            let exited = self
                .server
                .as_ref()
                .is_none_or(|(_, waiter)| waiter.is_finished());
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.log_file()).unwrap_or_default();
                bail!(
                    "PostgreSQL on port {port} {}; its log:\n{log}",
                    if exited {
                        "exited"
                    } else {
                        "was not ready within 60 s"
                    }
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            eprintln!("stopping the test PostgreSQL server: {e:#}");
        }
    }
}

/// Where the PostgreSQL server binaries are.
pub fn bindir() -> anyhow::Result<PathBuf> {
    let has_initdb = |p: &Path| p.join("initdb").is_file() && p.join("postgres").is_file();
    if let Some(dir) = std::env::var_os("AGP_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_initdb(&dir) {
            return Ok(dir);
        }
        bail!("AGP_PG_BINDIR={} has no initdb and postgres", dir.display());
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if has_initdb(&dir) {
            return Ok(dir);
        }
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| {
                    let version = e.file_name().to_str()?.parse().ok()?;
                    let dir = e.path().join("bin");
                    has_initdb(&dir).then_some((version, dir))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    match found.pop() {
        Some((_, dir)) => Ok(dir),
        None => bail!(
            "no PostgreSQL server binaries (initdb, postgres): install Debian's postgresql \
             package (apt-get install postgresql), or set AGP_PG_BINDIR"
        ),
    }
}

fn is_root() -> anyhow::Result<bool> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("running id -u")?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// `postgres` (Debian's package creates it), else `nobody`, from /etc/passwd.
fn unprivileged_user() -> anyhow::Result<RunAs> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    for name in ["postgres", "nobody"] {
        let found = passwd.lines().find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
        });
        if let Some(Some((uid, gid))) = found {
            return Ok(RunAs {
                name: name.to_string(),
                uid,
                gid,
            });
        }
    }
    bail!("running as root, and neither a postgres nor a nobody user exists to run PostgreSQL as")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// A self-signed certificate for `127.0.0.1` (not a CA: webpki and OpenSSL both take it as its
/// own trust anchor) and its key, written to `dir` by openssl (Debian's openssl package). Also
/// the CIMD test's TLS front uses it.
pub fn self_signed_certificate(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cfg = dir.join("cert.cnf");
    std::fs::write(
        &cfg,
        "[req]\ndistinguished_name = dn\nx509_extensions = ext\nprompt = no\n\
         [dn]\nCN = 127.0.0.1\n\
         [ext]\nsubjectAltName = IP:127.0.0.1\nbasicConstraints = critical,CA:FALSE\n\
         keyUsage = critical,digitalSignature\nextendedKeyUsage = serverAuth\n",
    )?;
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-config"])
        .arg(&cfg)
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .context("running openssl (Debian's openssl package)")?;
    if !out.status.success() {
        bail!("openssl: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((cert, key))
}
