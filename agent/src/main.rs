//! The `portail-agent` binary: parses arguments and hands over to [`portail_agent::cli::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portail_agent::cli::run(portail_agent::cli::Cli::parse()).await
}
