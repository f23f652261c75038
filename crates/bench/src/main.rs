//! `cacheserver-bench`: `just bench` (full run, writes docs/benchmarks.md), `--smoke` (seconds,
//! for CI), `drill` (the fault drill).
// A command-line tool whose output is its purpose.
#![allow(clippy::print_stdout)]

use cacheserver_bench::drill::{self, DrillPlan};
use cacheserver_bench::{runner, workspace_root, Plan};
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "cacheserver-bench",
    about = "Benchmarks and fault drill on real processes"
)]
struct Args {
    /// Tiny loads (CI): checks every step works, asserts no speed, writes no docs.
    #[arg(long, global = true)]
    smoke: bool,
    /// Where the release `api` and `worker` are (default: next to this binary).
    #[arg(long, global = true)]
    bin_dir: Option<PathBuf>,
    /// The config directory of those binaries when they are another build's (e.g. a checkout
    /// from before a change, compared with this one in the same session); default: this
    /// workspace's config/.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Markdown file whose generated part is replaced (default docs/benchmarks.md; not in smoke).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Run only these sections (comma list of limiter, enqueue, worker, queues,
    /// events, bullmq, cache, reconnect);
    /// a partial run writes no docs unless `--out` is given.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Register jobs while the worker, the api and Redis are killed and restarted in turn.
    Drill,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match args.bin_dir {
        Some(dir) => dir,
        None => std::env::current_exe()?
            .parent()
            .map(PathBuf::from)
            .unwrap_or_default(),
    };
    match args.command {
        Some(Cmd::Drill) => run_drill(&bin_dir, args.smoke).await,
        None => run_bench(bin_dir, args.config_dir, args.smoke, args.out, args.only).await,
    }
}

async fn run_bench(
    bin_dir: PathBuf,
    config_dir: Option<PathBuf>,
    smoke: bool,
    out: Option<PathBuf>,
    only: Vec<String>,
) -> anyhow::Result<()> {
    let mut plan = if smoke {
        Plan::smoke(bin_dir)
    } else {
        Plan::full(bin_dir)
    };
    let partial = !only.is_empty();
    plan.only = only;
    plan.config_dir = config_dir;
    let out = match (smoke || partial, out) {
        (_, Some(out)) => Some(out),
        (false, None) => Some(workspace_root().join("docs/benchmarks.md")),
        (true, None) => None,
    };
    let report = runner::bench(&plan, out.as_deref()).await?;
    println!(
        "bench: {} rows, {} goals missed",
        report.rows.len(),
        report.missed()
    );
    Ok(())
}

async fn run_drill(bin_dir: &std::path::Path, smoke: bool) -> anyhow::Result<()> {
    let plan = if smoke {
        DrillPlan::smoke()
    } else {
        DrillPlan::full()
    };
    let run = drill::run(bin_dir, plan);
    let summary = tokio::time::timeout(std::time::Duration::from_secs(290), run).await??;
    println!(
        "drill: unconfirmed (ran, answer lost)={} refused 503={} failed requests={} drain={:.1}s",
        summary.unconfirmed,
        summary.refused_503,
        summary.failed_requests,
        summary.drain.as_secs_f64()
    );
    println!(
        "drill: chaos resets={} ok={} 503={} errors={}",
        summary.chaos_resets, summary.chaos_ok, summary.chaos_503, summary.chaos_errors
    );
    println!("{}", summary.line());
    if summary.lost > 0 {
        anyhow::bail!("{} accepted jobs were lost", summary.lost);
    }
    Ok(())
}
