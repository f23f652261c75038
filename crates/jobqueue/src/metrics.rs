//! Every metric the worker exports, named once. Served on the worker's `/metrics`.
//!
//! | name | labels | what |
//! |---|---|---|
//! | `jobqueue_jobs_processed_total` | `type` | runs that succeeded |
//! | `jobqueue_jobs_failed_total` | `type` | runs that failed (timeouts included) |
//! | `jobqueue_jobs_retried_total` | `type` | failed runs that will be tried again |
//! | `jobqueue_jobs_dead_total` | `type` | jobs that failed for the last time |
//! | `jobqueue_jobs_timed_out_total` | `type` | runs cancelled at their timeout |
//! | `jobqueue_job_start_delay_seconds` | | histogram: start − due time |
//! | `jobqueue_paused` | `queue` | 1 while the queue is paused |
//! | `jobqueue_limited_total` | `queue` | fetches in which the queue's concurrency or rate limit held due jobs back |
//! | `jobqueue_jobs` | `state` | jobs per state (scheduled, pending, running, retrying, done, dead): exported by the **api** at scrape time, not by workers, so sums do not double |

pub const PROCESSED: &str = "jobqueue_jobs_processed_total";
pub const FAILED: &str = "jobqueue_jobs_failed_total";
pub const RETRIED: &str = "jobqueue_jobs_retried_total";
pub const DEAD: &str = "jobqueue_jobs_dead_total";
pub const TIMED_OUT: &str = "jobqueue_jobs_timed_out_total";
pub const CANCELLED: &str = "jobqueue_jobs_cancelled_total";
pub const START_DELAY: &str = "jobqueue_job_start_delay_seconds";
pub const PAUSED: &str = "jobqueue_paused";
pub const DEPTH: &str = "jobqueue_jobs";
pub const LIMITED: &str = "jobqueue_limited_total";

/// HELP lines for every worker metric (`promtool check metrics` wants one per family). Call once
/// after installing the recorder.
pub fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(PROCESSED, "Job runs that succeeded, by job type");
    describe_counter!(
        FAILED,
        "Job runs that failed (timeouts included), by job type"
    );
    describe_counter!(
        RETRIED,
        "Failed job runs that will be tried again, by job type"
    );
    describe_counter!(DEAD, "Jobs that failed for the last time, by job type");
    describe_counter!(
        TIMED_OUT,
        "Job runs cancelled at their timeout, by job type"
    );
    describe_counter!(CANCELLED, "Running jobs stopped by a cancel, by job type");
    describe_histogram!(
        START_DELAY,
        Unit::Seconds,
        "Time from a job's due time to its start"
    );
    describe_gauge!(PAUSED, "1 while the queue is paused");
    describe_counter!(
        LIMITED,
        "Fetches in which the queue's concurrency or rate limit held due jobs back"
    );
}

pub fn processed(job_type: &str) {
    metrics::counter!(PROCESSED, "type" => job_type.to_owned()).increment(1);
}

pub fn failed(job_type: &str) {
    metrics::counter!(FAILED, "type" => job_type.to_owned()).increment(1);
}

pub fn retried(job_type: &str) {
    metrics::counter!(RETRIED, "type" => job_type.to_owned()).increment(1);
}

pub fn dead(job_type: &str) {
    metrics::counter!(DEAD, "type" => job_type.to_owned()).increment(1);
}

pub fn timed_out(job_type: &str) {
    metrics::counter!(TIMED_OUT, "type" => job_type.to_owned()).increment(1);
}

pub fn cancelled(job_type: &str) {
    metrics::counter!(CANCELLED, "type" => job_type.to_owned()).increment(1);
}

pub fn start_delay(ms: u64) {
    metrics::histogram!(START_DELAY).record(ms as f64 / 1000.0);
}

pub fn limited(queue: &str) {
    metrics::counter!(LIMITED, "queue" => queue.to_owned()).increment(1);
}

pub fn paused(queue: &str, paused: bool) {
    metrics::gauge!(PAUSED, "queue" => queue.to_owned()).set(f64::from(u8::from(paused)));
}
