//! The `portail-agent` binary: parses arguments and hands over to [`portail_agent::app::cli::run`].
//!
//! The runtime is Tokio's single-threaded one. The agent's async side only drives requests:
//! everything that costs CPU or may block (the walk, reading and hashing files, multipart
//! parts, restores' writes) runs on the blocking pool, which stays multi-threaded. With two
//! worker threads, every request's wake-up crossed threads; on 2 cores, one thread uploaded
//! 5000 × 4 KiB files in 1.74 s instead of 2.21 s (client CPU 1.06 s instead of 1.50 s; see
//! BENCHMARKS.md), and a 1 GiB upload or restore kept its speed.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    portail_agent::app::cli::run(portail_agent::app::cli::Cli::parse()).await
}
