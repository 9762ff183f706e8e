//! The command line's own documentation and its health probe: `agp completions` for each shell,
//! `agp man` (roff that groff renders without complaint where groff exists), and
//! `agp healthcheck` against a real server and against nothing.

use std::process::Output;

use crate::cli::agp;
use crate::helpers::spawn_app;

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout.clone()).unwrap()
}

/// Commands every completion script and the man page must name.
const KNOWN: [&str; 6] = [
    "serve",
    "connectors",
    "register-tools",
    "approvals",
    "healthcheck",
    "completions",
];

#[test]
fn completions_for_each_shell_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&agp(&["completions", shell]).output().unwrap());
        for word in KNOWN {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        // The flags of a nested command too.
        assert!(script.contains("mcp-server-url"), "{shell}");
        // Where the shell is installed, the script at least parses.
        let check: Option<(&str, &[&str])> = match shell {
            "bash" => Some(("bash", &["-n"])),
            "zsh" => Some(("zsh", &["-n"])),
            "fish" => Some(("fish", &["--no-execute"])),
            _ => None,
        };
        if let Some((bin, args)) = check
            && which(bin)
        {
            let file = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(file.path(), &script).unwrap();
            let o = std::process::Command::new(bin)
                .args(args)
                .arg(file.path())
                .output()
                .unwrap();
            assert!(
                o.status.success(),
                "{bin} rejects the script: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        } else {
            eprintln!("{shell} is not installed: its completion script was not parsed");
        }
    }
    let o = agp(&["completions", "tcsh"]).output().unwrap();
    assert!(!o.status.success(), "an unknown shell is refused");
}

#[test]
fn the_man_page_is_roff_that_renders() {
    let page = ok(&agp(&["man"]).output().unwrap());
    assert!(
        page.contains(".TH agp 1"),
        "{}",
        &page[..page.len().min(400)]
    );
    assert!(page.contains(".SH NAME") && page.contains(".SH SYNOPSIS"));
    // The top page lists the top-level commands; nested ones have pages of their own.
    for word in [
        "serve",
        "connectors",
        "approvals",
        "healthcheck",
        "completions",
    ] {
        assert!(page.contains(word), "the man page lacks {word}");
    }
    if which("groff") {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &page).unwrap();
        let o = std::process::Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(file.path())
            .output()
            .unwrap();
        let warnings = String::from_utf8_lossy(&o.stderr);
        assert!(
            o.status.success() && warnings.trim().is_empty(),
            "groff: {warnings}"
        );
    } else {
        eprintln!("groff is not installed: the man page was not rendered");
    }

    // One page per command into a directory.
    let dir = tempfile::tempdir().unwrap();
    let o = agp(&["man", "--dir", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    ok(&o);
    for page in [
        "agp.1",
        "agp-serve.1",
        "agp-connectors-add.1",
        "agp-connectors-register-tools.1",
    ] {
        let text = std::fs::read_to_string(dir.path().join(page))
            .unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH"), "{page}");
    }
}

#[tokio::test]
async fn healthcheck_says_ready_or_fails() {
    let app = spawn_app().await;
    let url = format!("{}/readyz", app.base);
    let mut c = agp(&["healthcheck", "--url", &url]);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(ok(&o).contains("ready (200)"));
    // The listen address, as the container sets it (AGP_LISTEN=0.0.0.0:PORT), finds it too.
    let port = url::Url::parse(&app.base).unwrap().port().unwrap();
    let mut c = agp(&["healthcheck"]);
    c.env("AGP_LISTEN", format!("0.0.0.0:{port}"));
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert!(ok(&o).contains(&format!("http://127.0.0.1:{port}/readyz")));

    // Nothing listening: exit 1 and a reason.
    let mut c = agp(&[
        "healthcheck",
        "--url",
        "http://127.0.0.1:9/readyz",
        "--timeout",
        "2",
    ]);
    let o = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no answer"));
}

fn which(bin: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(bin).is_file()))
        .unwrap_or(false)
}
