//! One benchmark run: start the stack, run each section, collect the report.

use crate::machine::Machine;
use crate::report::Report;
use crate::stack::Stack;
use crate::{quiet, sections, Plan};
use anyhow::bail;
use std::path::Path;

/// Run every section. A failing section becomes a MISSED row (full run) or an error (smoke).
pub async fn bench(plan: &Plan, out: Option<&Path>) -> anyhow::Result<Report> {
    if !crate::wrk::available() {
        bail!("wrk is not installed (apt-get install -y wrk)");
    }
    let machine = Machine::probe();
    let mut report = Report::default();
    let mut stack = tokio::task::block_in_place(|| Stack::start(&plan.bin_dir))?
        .with_config_dir(plan.config_dir.clone());
    println!(
        "bench: redis and cluster up; logs in {}",
        stack.dir.path().display()
    );
    if plan.runs("limiter") {
        report.gate(quiet::wait("section limiter (start)", plan.quiet_bound).await);
        let r = sections::limiter::run(&stack, plan, &mut report).await;
        check(plan, &mut report, "limiter", r)?;
    }
    let mut enqueue = None;
    if plan.runs("enqueue") {
        report.gate(quiet::wait("section enqueue (start)", plan.quiet_bound).await);
        let r = sections::enqueue::run(&stack, plan, &mut report).await;
        enqueue = check(plan, &mut report, "enqueue", r)?;
    }
    let mut worker = None;
    if plan.runs("worker") {
        report.gate(quiet::wait("section worker (start)", plan.quiet_bound).await);
        let raw = enqueue.as_ref().map_or(0.0, |e| e.raw_single);
        let r = sections::worker::run(&stack, plan, &mut report, raw).await;
        worker = check(plan, &mut report, "worker", r)?;
    }
    if plan.runs("queues") {
        report.gate(quiet::wait("section queues (start)", plan.quiet_bound).await);
        let r = sections::queues::run(&stack, plan, &mut report).await;
        check(plan, &mut report, "queues", r)?;
    }
    if plan.runs("events") {
        report.gate(quiet::wait("section events (start)", plan.quiet_bound).await);
        let r = sections::events::run(&stack, plan, &mut report).await;
        check(plan, &mut report, "events", r)?;
    }
    if plan.runs("bullmq") {
        report.gate(quiet::wait("section bullmq (start)", plan.quiet_bound).await);
        let ours = sections::bullmq::Ours {
            enqueue: enqueue.as_ref(),
            worker: worker.as_ref(),
        };
        let r = sections::bullmq::run(&stack, plan, &mut report, ours).await;
        check(plan, &mut report, "bullmq", r)?;
    }
    if plan.runs("cache") {
        report.gate(quiet::wait("section cache (start)", plan.quiet_bound).await);
        let r = sections::cache::run(&stack, plan, &mut report).await;
        check(plan, &mut report, "cache", r)?;
    }
    if plan.runs("reconnect") {
        report.gate(quiet::wait("section reconnect (start)", plan.quiet_bound).await);
        let r = sections::reconnect::run(&mut stack, plan, &mut report).await;
        check(plan, &mut report, "reconnect", r)?;
    }
    if let Some(out) = out {
        report.write(out, &machine, plan.smoke)?;
        println!("bench: wrote {}", out.display());
    }
    Ok(report)
}

fn check<T>(
    plan: &Plan,
    report: &mut Report,
    section: &str,
    result: anyhow::Result<T>,
) -> anyhow::Result<Option<T>> {
    match result {
        Ok(v) => Ok(Some(v)),
        Err(e) if plan.smoke => Err(e.context(format!("section {section}"))),
        Err(e) => {
            report.goal(
                section,
                "section ran to the end",
                format!("{e:#}"),
                "no error",
                false,
            );
            Ok(None)
        }
    }
}
