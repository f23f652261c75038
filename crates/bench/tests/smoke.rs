//! Keeps the bench from rotting: the whole benchmark with tiny loads (seconds, no speed
//! assertions) on the debug binaries, in every `just test`. The drill is `#[ignore]`d (minutes):
//! `just drill` or `cargo nextest run -p cacheserver-bench --run-ignored only`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use cacheserver_bench::drill::{self, DrillPlan};
use cacheserver_bench::{runner, Plan};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_smoke_runs_every_section() {
    let plan = Plan::smoke(cacheserver_bench::debug_bin_dir());
    let report = runner::bench(&plan, None).await.expect("smoke bench");
    assert!(report.rows.len() >= 30, "rows: {}", report.rows.len());
    bullmq_rows_are_sane(&report);
}

/// BullMQ ran in the same run: every row has its figure, and ours beside it where we measure it.
fn bullmq_rows_are_sane(report: &cacheserver_bench::report::Report) {
    let rows = &report.comparisons;
    // A worker row per concurrency, BullMQ's one-process-per-core row, 3 timeliness rows,
    // 3 enqueue rows, 4 cost rows.
    assert_eq!(rows.len(), 14, "BullMQ rows: {rows:#?}");
    for row in rows {
        assert!(!row.bullmq.starts_with('—'), "no BullMQ figure: {row:?}");
        if let Some(r) = row.ratio {
            assert!(r.is_finite(), "ratio: {row:?}");
        }
    }
    let workers: Vec<_> = rows
        .iter()
        .filter(|r| r.measure.starts_with("one worker") || r.measure.starts_with("BullMQ's"))
        .collect();
    assert_eq!(workers.len(), 4, "worker rows: {workers:#?}");
    for row in workers {
        assert!(row.ratio.is_some_and(|r| r > 0.0), "worker row: {row:?}");
        assert!(row.ours.contains("µs CPU/job"), "CPU per job: {row:?}");
        assert!(row.bullmq.contains("µs CPU/job"), "CPU per job: {row:?}");
    }
    // Every timed phase passed the quiet gate (in smoke it may be busy: it is recorded, not waited).
    assert!(report.gates.len() >= 12, "gates: {:#?}", report.gates);
    let both = rows.iter().filter(|r| r.ratio.is_some()).count();
    assert!(both >= 7, "rows with both sides: {both} in {rows:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "minutes: run with `just drill`"]
async fn drill_loses_no_accepted_job() {
    let summary = drill::run(&cacheserver_bench::debug_bin_dir(), DrillPlan::full())
        .await
        .expect("drill");
    println!("{}", summary.line());
    assert!(summary.accepted > 0);
    assert_eq!(summary.lost, 0, "{summary:?}");
}
