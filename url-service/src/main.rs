//! The `portail-url-service` binary: parses arguments and hands over to
//! [`portail_url_service::cli::run`].

use clap::Parser;

// mimalloc rather than glibc's malloc: under wrk (case 7 of scripts/bench), malloc and free
// were a tenth of the service's CPU; with mimalloc, POST /v1/files/{id}/url went from 5757 to
// 6032 req/s and GET /l/{token} from 4102 to 4421 (medians of 3 interleaved rounds).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    portail_url_service::cli::run(portail_url_service::cli::Cli::parse()).await
}
