//! The `agp` binary: parse arguments, run. Everything else lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    agp::cli::run(agp::cli::Cli::parse()).await
}
