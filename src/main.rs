//! The `agp` binary: parse arguments, run. Everything else lives in the library.

use clap::Parser;

/// Replay and request handling allocate many small objects; mimalloc is markedly faster here
/// than glibc's allocator (see `cargo bench --bench replay`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    agp::cli::run(agp::cli::Cli::parse()).await
}
