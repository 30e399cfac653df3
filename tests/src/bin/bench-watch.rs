//! `bench-watch`: measures watch-mode latency for `scripts/bench` (case 6).
//!
//! In: a running `portail-agent watch` on ROOT (started by the harness), its catalog
//! (DATABASE_URL) and bucket (AWS_* variables). It writes COUNT files at RATE per second and, for
//! each, measures the time from the write's close to the moment both hold: the catalog row is
//! `synced` with the file's MD5, and a HEAD on the object answers with that size. With
//! `--dirs N` the files are spread over N folders, made before the timed writes. Out: one JSON
//! line `{"rate":..,"count":..,"p50_ms":..,"p99_ms":..,"max_ms":..}` on stdout.

use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use md5::{Digest, Md5};
use portail_core::config::FromEnv;

#[derive(Debug, Parser)]
#[command(name = "bench-watch")]
struct Opt {
    /// The directory the agent watches.
    #[arg(long)]
    root: std::path::PathBuf,
    /// Files written per second.
    #[arg(long)]
    rate: u32,
    /// Files written in all.
    #[arg(long)]
    count: u32,
    /// The agent's S3_PREFIX.
    #[arg(long, default_value = "")]
    prefix: String,
    /// Spread the files over this many folders (made before the timed writes).
    #[arg(long, default_value_t = 1)]
    dirs: u32,
    /// Give up on a file after this many seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,
    /// Trust the catalog row alone, without a HEAD per file: at 1000 files/s the HEADs
    /// would take a third of the server's capacity from the agent. The agent writes a row
    /// `synced` only after S3 accepted the object.
    #[arg(long)]
    no_head: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let opt = Opt::parse();
    let db = std::env::var("DATABASE_URL").context("DATABASE_URL")?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&db)
        .await?;
    let bucket = std::env::var("AWS_BUCKET_NAME").context("AWS_BUCKET_NAME")?;
    let s3_config: portail_core::config::S3Config = FromEnv::from_env()?;
    let s3 = portail_core::s3::build_client(&s3_config).await;
    let agent = std::env::var("AGENT_ID").context("AGENT_ID")?;

    let run = format!("run-{}-{}", opt.rate, std::process::id());
    let dir = opt.root.join(&run);
    for d in 0..opt.dirs {
        std::fs::create_dir_all(dir.join(folder(d, opt.dirs)))?;
    }
    // Let the watcher add the new directory before the timed writes start.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, String, usize, Instant)>();
    let writer = {
        let dir = dir.clone();
        let run = run.clone();
        let (rate, count, dirs) = (opt.rate, opt.count, opt.dirs);
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let period = Duration::from_secs_f64(1.0 / f64::from(rate));
            let start = Instant::now();
            for i in 0..count {
                let due = start + period * i;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let body = format!("bench {run} file {i}\n").repeat(16);
                let name = format!("{}f{i:05}.txt", folder(i % dirs, dirs));
                let mut f = std::fs::File::create(dir.join(&name))?;
                f.write_all(body.as_bytes())?;
                drop(f); // the close: the clock starts here
                let closed = Instant::now();
                let md5 = hex::encode(Md5::digest(body.as_bytes()));
                let _ = tx.send((format!("{run}/{name}"), md5, body.len(), closed));
            }
            Ok(())
        })
    };

    let target = Target {
        pool: &pool,
        agent: &agent,
        s3: (!opt.no_head).then_some(&s3),
        bucket: &bucket,
        prefix: &opt.prefix,
    };
    let mut waiting = Waiting::new();
    let mut latencies = Vec::new();
    let deadline_per_file = Duration::from_secs(opt.timeout);
    let mut done_writing = false;
    loop {
        while let Ok((path, md5, size, at)) = rx.try_recv() {
            waiting.insert(path, (md5, size, at));
        }
        if !done_writing && writer.is_finished() && rx.is_empty() {
            done_writing = true;
        }
        if done_writing && waiting.is_empty() {
            break;
        }
        if !waiting.is_empty() {
            for (path, latency) in target.synced(&waiting).await? {
                latencies.push(latency);
                waiting.remove(&path);
            }
            if let Some((p, _)) = waiting
                .iter()
                .find(|(_, (_, _, at))| at.elapsed() > deadline_per_file)
            {
                anyhow::bail!("{p} not synced after {}s", opt.timeout);
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    writer.await??;
    latencies.sort();
    let q = |p: f64| {
        let i = ((latencies.len() as f64 - 1.0) * p).round() as usize;
        latencies[i].as_secs_f64() * 1000.0
    };
    println!(
        "{{\"rate\":{},\"count\":{},\"p50_ms\":{:.1},\"p99_ms\":{:.1},\"max_ms\":{:.1}}}",
        opt.rate,
        latencies.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    Ok(())
}

/// The folder of file `i` (with one folder: the run's own directory), with its `/`.
fn folder(i: u32, dirs: u32) -> String {
    match dirs {
        0 | 1 => String::new(),
        _ => format!("d{i:03}/"),
    }
}

/// Where a file counts as synced: its catalog row and its object.
struct Target<'a> {
    pool: &'a sqlx::PgPool,
    /// The agent's name (its rows only).
    agent: &'a str,
    /// The client to HEAD each object with; `None`: the row alone counts.
    s3: Option<&'a aws_sdk_s3::Client>,
    bucket: &'a str,
    prefix: &'a str,
}

/// Files waiting: path -> (MD5, size, when the writer closed it).
type Waiting = HashMap<String, (String, usize, Instant)>;

impl Target<'_> {
    /// The waiting files that are synced now, with their latency: the catalog row is `synced`
    /// with the file's MD5, and a HEAD (many in flight, so that the measurement keeps up
    /// with a high rate) finds the object at its size.
    ///
    /// Only the rows synced in the last 10 seconds are read: asking for every waiting path
    /// (thousands at 1000 files/s) every 5 ms made the measurement, not the agent, fall
    /// behind (a p50 of 60 s while the catalog trailed the writer by 0.5 s).
    async fn synced(&self, waiting: &Waiting) -> anyhow::Result<Vec<(String, Duration)>> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "select f.path, f.md5 from files f join agents a on a.id = f.agent_id
             where a.name = $1 and f.status = 'synced'
               and f.synced_at > now() - interval '10 seconds'",
        )
        .bind(self.agent)
        .fetch_all(self.pool)
        .await?;
        let candidates = rows.into_iter().filter_map(|(path, md5)| {
            let (want, size, at) = waiting.get(&path)?;
            (md5.as_deref() == Some(want.as_str())).then_some((path, *size, *at))
        });
        let heads = futures::stream::iter(candidates).map(|(path, size, at)| async move {
            let Some(s3) = self.s3 else {
                return Some((path, at.elapsed()));
            };
            let head = s3
                .head_object()
                .bucket(self.bucket)
                .key(format!("{}{path}", self.prefix))
                .send()
                .await;
            head.is_ok_and(|h| h.content_length() == Some(size as i64))
                .then(|| (path, at.elapsed()))
        });
        Ok(heads
            .buffer_unordered(32)
            .filter_map(|x| async { x })
            .collect()
            .await)
    }
}
