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
    // Worker rows twice (bench:noop and the demo job), per concurrency.
    assert_eq!(rows.len(), 16, "BullMQ rows: {rows:#?}");
    for row in rows {
        assert!(!row.bullmq.starts_with('—'), "no BullMQ figure: {row:?}");
        if let Some(r) = row.ratio {
            assert!(r.is_finite(), "ratio: {row:?}");
        }
    }
    let workers = rows.iter().filter(|r| r.measure.starts_with("one worker"));
    for row in workers {
        assert!(row.ratio.is_some_and(|r| r > 0.0), "worker row: {row:?}");
    }
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
