//! `bench-ceiling`: the ceiling for small-file uploads in `scripts/bench` (case 1).
//!
//! In: a tree ROOT, a bucket (AWS_BUCKET_NAME and the other AWS_* variables) and a concurrency.
//! It reads every file into memory first (not timed), then PUTs them all with `Content-MD5`,
//! CONCURRENCY requests in flight, through the same SDK client portail builds (checksums
//! `WhenRequired`, the same timeouts). No catalog, no metadata, no walk: what is left is the
//! client, the server and loopback, which is as fast as any tool can upload these files here.
//! Out: one JSON line `{"files":..,"seconds":..,"files_per_s":..}` on stdout; `seconds` runs
//! from the first PUT sent to the last answered.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use base64::Engine;
use clap::Parser;
use futures::stream::{self, StreamExt, TryStreamExt};
use md5::{Digest, Md5};
use portail_core::config::FromEnv;

#[derive(Debug, Parser)]
#[command(name = "bench-ceiling")]
struct Opt {
    /// The tree to upload.
    #[arg(long)]
    root: std::path::PathBuf,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Also send what portail sends besides the bytes: a content type and the five user
    /// metadata entries (md5chksum, mtime, mode, uid, gid), which the server stores too.
    #[arg(long)]
    metadata: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opt = Opt::parse();
    let bucket = std::env::var("AWS_BUCKET_NAME").context("AWS_BUCKET_NAME")?;
    let s3_config: portail_core::config::S3Config = FromEnv::from_env()?;
    let s3 = portail_core::s3::build_client(&s3_config).await;
    let files = read_tree(&opt.root)?;
    let n = files.len();
    let with_metadata = opt.metadata;

    let started = Instant::now();
    stream::iter(files)
        .map(|(key, body)| {
            let s3 = &s3;
            let bucket = &bucket;
            async move {
                let md5 = base64::engine::general_purpose::STANDARD.encode(Md5::digest(&body));
                let metadata = with_metadata.then(|| {
                    HashMap::from([
                        ("md5chksum".to_string(), md5.clone()),
                        ("mtime".to_string(), "1700000000.123456".to_string()),
                        ("mode".to_string(), "100644".to_string()),
                        ("uid".to_string(), "0".to_string()),
                        ("gid".to_string(), "0".to_string()),
                    ])
                });
                s3.put_object()
                    .bucket(bucket)
                    .key(&key)
                    .content_md5(md5)
                    .set_content_type(with_metadata.then(|| "application/octet-stream".into()))
                    .set_metadata(metadata)
                    .body(body.into())
                    .send()
                    .await
                    .with_context(|| format!("PUT {key}"))
            }
        })
        .buffer_unordered(opt.concurrency)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"files\":{n},\"seconds\":{seconds:.4},\"files_per_s\":{:.1}}}",
        n as f64 / seconds
    );
    Ok(())
}

/// Every regular file under `root`, as (key, contents), keys relative with `/`.
fn read_tree(root: &std::path::Path) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(root) {
        let entry = entry?;
        if !entry.file_type().is_file() {
            continue;
        }
        let rel = entry.path().strip_prefix(root)?;
        let key = rel.to_str().context("a non-UTF-8 name")?.to_owned();
        files.push((key, std::fs::read(entry.path())?));
    }
    Ok(files)
}
