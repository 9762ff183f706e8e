//! `agp serve` as a user runs it: a child process with flags and environment, JSON logs,
//! first-start messages, and a clean exit on SIGTERM.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

#[test]
fn serve_with_env_config_json_logs_and_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("nested/data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["serve", "--log-format", "json"])
        .env("AGP_DATA_DIR", &data)
        .env("AGP_LISTEN", "127.0.0.1:0")
        .env("AGP_PUBLIC_URL", "https://agp.example.com/")
        .env_remove("AGP_LOG")
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        Box::new(stdout) as Box<dyn std::io::Read + Send>,
        Box::new(stderr),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
    }
    drop(tx);
    let mut lines = Vec::new();
    let port = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server logs");
        lines.push(line.clone());
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        if v["message"] == "AGP is ready" {
            assert_eq!(v["public_url"], "https://agp.example.com");
            assert_eq!(v["huge_pages"], false, "{line}");
            break v["port"].as_u64().unwrap();
        }
    };
    let token_path = data.join("admin.token");
    let token = std::fs::read_to_string(&token_path)
        .unwrap()
        .trim()
        .to_string();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("created the admin token")
                && l.contains(token_path.to_str().unwrap())),
        "first start says where the token is: {lines:#?}"
    );

    // Transparent huge pages are off for the process (decision 0009), where the kernel says.
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    if let Some(thp) = status.lines().find(|l| l.starts_with("THP_enabled:")) {
        assert!(thp.ends_with('0'), "{thp}");
    }

    // A real request through the running server.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let r = http
            .post(format!("http://127.0.0.1:{port}/api/v1/profiles"))
            .bearer_auth(&token)
            .json(&serde_json::json!({"name": "from-serve"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 201);
        let r = http
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    });

    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "exit on SIGTERM: {status}");
    lines.extend(rx.iter());
    for line in &lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(
            !line.contains(&token),
            "the admin token reached a log line: {line}"
        );
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\"route\":\"/api/v1/profiles\"") && l.contains("\"status\":201"))
    );
    assert!(
        lines.iter().any(|l| l.contains("event log closed")),
        "{lines:#?}"
    );

    // Restart on the same directory: the token is kept and the profile is there.
    let out = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["--output", "json", "events", "export"])
        .env("AGP_DATA_DIR", &data)
        .env_remove("AGP_URL")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("from-serve"));
}

#[test]
fn bad_configuration_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["serve", "--listen", "not-an-address"])
        .env("AGP_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--listen \"not-an-address\""), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--public-url",
            "ftp://x",
        ])
        .env("AGP_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--public-url"));
}

#[test]
fn a_wrong_or_missing_master_key_refuses_to_serve() {
    let dir = tempfile::tempdir().unwrap();
    let key_a = "a".repeat(64);
    let key_b = "b".repeat(64);
    let run = |key: Option<&str>| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agp"));
        c.args(["serve", "--listen", "127.0.0.1:0"])
            .env("AGP_DATA_DIR", dir.path())
            .env_remove("AGP_MASTER_KEY");
        if let Some(k) = key {
            c.env("AGP_MASTER_KEY", k);
        }
        c.stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    // First start creates the vault under key A; stop it once ready.
    let mut first = run(Some(&key_a));
    let stdout = first.stdout.take().unwrap();
    let mut ready = false;
    for line in BufReader::new(stdout).lines().map_while(Result::ok) {
        if line.contains("AGP is ready") {
            ready = true;
            break;
        }
    }
    assert!(ready);
    Command::new("kill")
        .args(["-TERM", &first.id().to_string()])
        .status()
        .unwrap();
    assert!(first.wait().unwrap().success());

    for (key, expect) in [(Some(key_b.as_str()), "master key"), (None, "master key")] {
        let out = run(key).wait_with_output().unwrap();
        assert!(!out.status.success(), "started with a wrong or missing key");
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(err.to_lowercase().contains(expect), "{err}");
        assert!(!err.contains("AGP is ready"));
        assert!(
            !err.contains(&key_b) && !err.contains(&key_a),
            "the key reached the output"
        );
    }
}

/// The master key from a mounted secret (a container's, or systemd's `LoadCredential`): the
/// server starts with it, says where the key came from (never the key), never writes a key file
/// of its own, and refuses to start when the named file is missing or `AGP_MASTER_KEY` is set
/// too.
#[test]
fn the_master_key_from_a_named_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let secret = dir.path().join("credentials/master.key");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    let key = "c".repeat(64);
    std::fs::write(&secret, format!("{key}\n")).unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agp"));
        c.args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
            .args(args)
            .env("AGP_DATA_DIR", &data)
            .env_remove("AGP_MASTER_KEY")
            .env_remove("AGP_MASTER_KEY_FILE")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c.spawn().unwrap()
    };
    let secret_str = secret.to_str().unwrap();
    for (round, (args, env)) in [
        (vec![], vec![("AGP_MASTER_KEY_FILE", secret_str)]),
        (vec!["--master-key-file", secret_str], vec![]),
    ]
    .into_iter()
    .enumerate()
    {
        let mut child = run(&args, &env);
        let stdout = child.stdout.take().unwrap();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let ready = line.contains("AGP is ready");
            lines.push(line);
            if ready {
                break;
            }
        }
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(child.wait().unwrap().success(), "round {round}: {lines:#?}");
        let unsealed = lines
            .iter()
            .find(|l| l.contains("vault unsealed"))
            .unwrap_or_else(|| panic!("round {round}: {lines:#?}"));
        assert!(
            unsealed.contains(&format!("named file {secret_str}")),
            "{unsealed}"
        );
        assert!(
            lines.iter().all(|l| !l.contains(&key)),
            "the key reached the log"
        );
        assert!(
            !data.join("master.key").exists(),
            "AGP wrote a key file of its own"
        );
    }

    // The vault now opens only with that key: the file is the key, not a hint.
    let missing = dir.path().join("credentials/absent");
    let both = [
        ("AGP_MASTER_KEY_FILE", secret_str),
        ("AGP_MASTER_KEY", &key),
    ];
    let missing_env = [("AGP_MASTER_KEY_FILE", missing.to_str().unwrap())];
    for (env, expect) in [
        (&missing_env[..], "does not exist"),
        (&both[..], "set one of them"),
    ] {
        let out = run(&[], env).wait_with_output().unwrap();
        assert!(!out.status.success());
        let err = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(err.contains(expect), "{err}");
        assert!(!err.contains(&key), "the key reached the output");
        assert!(!err.contains("AGP is ready"));
    }
}

/// A binary built without the `otlp` feature refuses `--otlp-endpoint` and says why.
#[cfg(not(feature = "otlp"))]
#[test]
fn otlp_without_the_feature_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("AGP_DATA_DIR", dir.path())
        .env("AGP_OTLP_ENDPOINT", "http://127.0.0.1:4318")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("built without OTLP") && err.contains("--features otlp"),
        "{err}"
    );
    assert!(
        !dir.path().join("events").exists(),
        "it refused before opening anything"
    );
}
