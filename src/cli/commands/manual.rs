//! The command line's own documentation, generated from the same clap definition that parses
//! it (so neither can drift): `agp completions bash|zsh|fish|elvish|powershell` prints a
//! completion script, `agp man` prints the man page (roff) or writes one page per command into
//! a directory.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, CommandFactory};

use crate::cli::Cli;

#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish (also elvish, powershell).
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Clone, Args)]
pub struct ManArgs {
    /// Write `agp.1` and one page per subcommand (`agp-connectors-add.1`, …) into this
    /// directory instead of printing `agp.1`.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

/// The completion script for `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "agp", &mut out);
    out
}

/// The top-level man page, `agp.1`, as roff.
pub fn man_page() -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    clap_mangen::Man::new(Cli::command()).render(&mut out)?;
    Ok(out)
}

/// Writes `bytes` to stdout; a reader that went away (`agp man | head`) is not an error.
fn print(bytes: &[u8], what: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.with_context(|| format!("writing {what}")),
    }
}

pub fn run_completions(args: CompletionsArgs) -> anyhow::Result<ExitCode> {
    print(&completions(args.shell), "the completion script")?;
    Ok(ExitCode::SUCCESS)
}

pub fn run_man(args: ManArgs) -> anyhow::Result<ExitCode> {
    match args.dir {
        None => print(
            &man_page().context("rendering the man page")?,
            "the man page",
        )?,
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            clap_mangen::generate_to(Cli::command(), &dir)
                .with_context(|| format!("writing man pages into {}", dir.display()))?;
            eprintln!("man pages written to {}", dir.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
