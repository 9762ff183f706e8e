//! What an operator deploys: the container image (`Dockerfile`, built and run by
//! `tools/container-smoke` where a container runtime answers) and the systemd unit
//! (`deploy/agp.service`, checked by `systemd-analyze verify` and its offline security review
//! where systemd is installed). Each says when it was skipped and why.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn on_path(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|c| c.is_file())
    })
}

/// The Dockerfile's promises, checked on its text where no runtime can build it.
#[test]
fn the_dockerfile_runs_agp_unprivileged_with_a_volume_a_health_check_and_signals() {
    let text = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let has = |l: &str| lines.contains(&l);
    assert!(
        text.contains("cargo build --release --locked --bin agp"),
        "built from the locked dependencies"
    );
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("FROM ")).count(),
        2,
        "two stages"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("FROM debian:") && l.ends_with("-slim")),
        "runs on Debian slim"
    );
    assert!(has("USER 10001:10001"), "a numeric, non-root user");
    assert!(has("VOLUME [\"/var/lib/agp\"]"));
    assert!(text.contains("AGP_DATA_DIR=/var/lib/agp"));
    assert!(
        text.contains("CMD [\"agp\", \"healthcheck\""),
        "health check by agp itself"
    );
    assert!(
        has("ENTRYPOINT [\"agp\"]"),
        "exec form: agp is PID 1 and gets SIGTERM"
    );
    // The context is an allow-list: a local agp-data/ (master.key, admin.token) never enters it.
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    let rules: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(rules.first(), Some(&"*"), "{rules:?}");
    for path in [
        "Cargo.toml",
        "Cargo.lock",
        "src/",
        "vendor/",
        "assets/",
        "benches/",
    ] {
        assert!(
            rules.contains(&format!("!{path}").as_str()),
            "{path} is not in the context"
        );
        let copied = path.trim_end_matches('/');
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with("COPY ") && l.contains(copied)),
            "{path} is not copied into the build"
        );
    }
}

/// Builds the image and runs it (`tools/container-smoke`) where docker or podman answers.
#[test]
fn the_container_image_builds_and_answers_readyz() {
    let out = Command::new(repo().join("tools/container-smoke"))
        .current_dir(repo())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    if stdout.contains("SKIPPED") {
        eprintln!("{}", stdout.trim());
    } else {
        assert!(stdout.contains("container-smoke: OK"), "{stdout}\n{stderr}");
    }
}

/// `systemd-analyze verify` on the unit as it will be installed (under a scratch root that holds
/// the binary at its ExecStart path, the man pages its Documentation= names and systemd's own
/// units): any line about the unit fails the test, since verify exits 0 on many warnings. Then
/// the offline security review must rate its exposure at most 2.0 ("OK").
#[test]
fn the_systemd_unit_verifies() {
    let Some(analyze) = on_path("systemd-analyze") else {
        eprintln!("SKIPPED: systemd-analyze is not installed (Debian package systemd)");
        return;
    };
    let units = Path::new("/usr/lib/systemd/system");
    if !units.join("sysinit.target").exists() {
        eprintln!(
            "SKIPPED: systemd's own units are not installed at {}",
            units.display()
        );
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("usr/local/bin")).unwrap();
    std::fs::create_dir_all(r.join("etc/systemd/system")).unwrap();
    std::fs::copy(env!("CARGO_BIN_EXE_agp"), r.join("usr/local/bin/agp")).unwrap();
    std::fs::copy(
        repo().join("deploy/agp.service"),
        r.join("etc/systemd/system/agp.service"),
    )
    .unwrap();
    copy_dir(units, &r.join("usr/lib/systemd/system"));
    let man = r.join("usr/local/share/man");
    let o = Command::new(env!("CARGO_BIN_EXE_agp"))
        .args(["man", "--dir"])
        .arg(man.join("man1"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let run = |args: &[&str]| {
        let o = Command::new(&analyze)
            .args(args)
            .arg(format!("--root={}", r.display()))
            .arg("agp.service")
            .env("MANPATH", &man)
            .env("SYSTEMD_LOG_COLOR", "0")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        (o.status.success(), text)
    };
    let (ok, text) = run(&["verify"]);
    let about_unit: Vec<&str> = text.lines().filter(|l| l.contains("agp.service")).collect();
    assert!(
        ok && about_unit.is_empty(),
        "systemd-analyze verify:\n{text}"
    );
    if !text.trim().is_empty() {
        eprintln!("systemd-analyze verify said, about other units:\n{text}");
    }
    let (ok, text) = run(&["security", "--offline=yes", "--threshold=20"]);
    let score = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or("no overall exposure level")
        .to_string();
    assert!(ok, "exposure above 2.0: {score}\n{text}");
    eprintln!("{}", score.trim());
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().unwrap();
        if kind.is_symlink() {
            let link = std::fs::read_link(entry.path()).unwrap();
            std::os::unix::fs::symlink(link, &target).unwrap();
        } else if kind.is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}
