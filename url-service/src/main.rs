//! The `portail-url-service` binary: parses arguments and hands over to
//! [`portail_url_service::cli::run`].

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portail_url_service::cli::run(portail_url_service::cli::Cli::parse()).await
}
