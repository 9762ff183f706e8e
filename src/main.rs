//! The `agp` binary: parse arguments, run. Everything else lives in the library.

use clap::Parser;

/// Replay and request handling allocate many small objects; mimalloc is markedly faster here
/// than glibc's allocator (see `cargo bench --bench replay`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = agp::cli::Cli::parse();
    match agp::cli::runtime(&cli) {
        Ok(runtime) => runtime.block_on(agp::cli::run(cli)),
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
