//! `dev-s3`: a standalone local S3 server (s3s-fs with SigV4 auth) for `scripts/dev` and the
//! benchmarks. Not for production: it stores objects as plain files under DATA_DIR.

use clap::Parser;

/// A local S3 server: s3s-fs with SigV4 auth, path-style addressing.
#[derive(Debug, Parser)]
#[command(name = "dev-s3")]
struct Opt {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: String,
    /// Access key clients must sign with.
    #[arg(long, env = "AWS_ACCESS_KEY_ID")]
    access_key: String,
    /// Secret key clients must sign with.
    #[arg(long, env = "AWS_SECRET_ACCESS_KEY", hide_env_values = true)]
    secret_key: String,
    /// Buckets to create at start (directories under the data directory).
    #[arg(long = "bucket")]
    buckets: Vec<String>,
    /// The data directory; one sub-directory per bucket.
    data_dir: std::path::PathBuf,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opt = Opt::parse();
    std::fs::create_dir_all(&opt.data_dir)?;
    for b in &opt.buckets {
        std::fs::create_dir_all(opt.data_dir.join(b))?;
    }
    let listener = tokio::net::TcpListener::bind(&opt.addr).await?;
    eprintln!("dev-s3 listening on http://{}", listener.local_addr()?);
    tokio::select! {
        r = portail_tests::serve_s3(listener, &opt.data_dir, &opt.access_key, &opt.secret_key) => r,
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}
