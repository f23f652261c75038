//! Job types: the contract ([`JobType`]), the error a run returns ([`JobError`]) and the
//! registry. **One file per type** in this folder; [`Registry::production`] holds one line per
//! type, and that registry is what the worker runs, what the api validates against and what the
//! OpenAPI spec documents.
//!
//! Adding a type: copy `delay_print.rs`, change `NAME`, the payload and `run`, then add
//! `.with(your_type::YourType)` to [`Registry::production`]. Retries, backoff, the early-start
//! guard, timeouts, counters and metrics are done around every type by `runner.rs`.
//!
//! Each payload rule is written once. Rules JSON Schema can state (types, bounds, lengths,
//! patterns, enums, unknown fields) go in the payload's `#[schema(..)]` attributes: the registry
//! compiles that published schema once ([`Registry::with`]) and checks every payload against it
//! before `serde` reads it, so the spec and the check cannot disagree. [`JobType::validate`] is
//! for what a schema cannot say (look-ups, settings, rules between fields); say those in the
//! payload's doc comment, which the spec shows.

pub mod delay_print;
mod payload_schema;
pub mod webhook;

use crate::error::JobQueueError;
use cacheserver_config::JobqueueSettings;
use futures::future::BoxFuture;
use payload_schema::PayloadSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use utoipa::openapi::{RefOr, Schema};

pub use delay_print::{DelayPrint, BIG_PREFIX, FAIL_PREFIX, SLOW_PREFIX};
pub use webhook::Webhook;

/// A kind of job: a name, a payload type, validation and what a run does.
pub trait JobType: Send + Sync + 'static {
    /// Stored with each job and given by clients as `"type"`, e.g. `"demo:delay_print"`.
    const NAME: &'static str;
    /// What a job of this type carries (JSON; documented in the OpenAPI spec).
    type Payload: Serialize + DeserializeOwned + utoipa::ToSchema + Send + 'static;
    /// What a successful run returns, stored with the job and shown as its `result` (`()`: none).
    /// At most [`MAX_RESULT_BYTES`] once serialised, else the run fails (and is not retried).
    type Output: Serialize + utoipa::ToSchema + Send + 'static;

    /// Reject a payload the schema accepts but this type cannot run (rules a schema cannot
    /// state: look-ups, settings, rules between fields); the message names the field. Checked
    /// after the payload's schema, so never repeat a schema rule here.
    fn validate(&self, _payload: &Self::Payload) -> Result<(), String> {
        Ok(())
    }

    /// Longest run unless the registration gives `timeout_seconds` (`None`:
    /// `jobqueue.default_timeout`).
    fn default_timeout(&self) -> Option<Duration> {
        None
    }

    /// Hide secrets in a stored payload before it is shown (api) or logged.
    fn redact(&self, _payload: &mut Value) {}

    /// The queue a job of this type goes to when its registration names none (`None`: the
    /// queue of the handle it is enqueued through, for the api `jobqueue.queue`). A queue
    /// given with the job wins.
    fn default_queue(&self) -> Option<&'static str> {
        None
    }

    /// The key the queue's per-key limits (`key_concurrency`, `key_rate_limit`) count a job
    /// under when its registration gives no `limit_key` (`None`: none). `http:webhook`: the
    /// target host.
    fn limit_key(&self, _payload: &Self::Payload) -> Option<String> {
        None
    }

    /// One run. `Err` counts as a failure; [`JobError::retryable`] says whether to try again.
    /// A cancelled run is dropped at its next `.await`; long runs may watch
    /// [`JobContext::cancelled`] to stop cleanly.
    fn run(
        &self,
        payload: Self::Payload,
        ctx: &JobContext,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;
}

/// Largest result stored with a job, serialised as JSON (64 KB).
pub const MAX_RESULT_BYTES: usize = 64 * 1024;

/// Where [`JobContext::progress`] goes (the worker coalesces and writes it).
pub type ProgressSink = Arc<dyn Fn(JobProgress) + Send + Sync>;

/// How far a running job is, as it last said (`ctx.progress`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JobProgress {
    /// 0..=100.
    #[schema(minimum = 0, maximum = 100, example = 40)]
    pub percent: u8,
    #[schema(example = "resized 4 of 10 images")]
    pub message: String,
}

/// What a run may know about itself, and how it reports progress and learns it was cancelled.
#[derive(Clone)]
pub struct JobContext {
    pub job_id: String,
    /// 1 on the first run, 2 on the first retry, …
    pub attempt: u32,
    progress: Option<ProgressSink>,
    cancel: Option<tokio::sync::watch::Receiver<bool>>,
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobContext")
            .field("job_id", &self.job_id)
            .field("attempt", &self.attempt)
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl JobContext {
    /// A context that records no progress and is never cancelled (tests, embedders).
    pub fn new(job_id: impl Into<String>, attempt: u32) -> Self {
        Self {
            job_id: job_id.into(),
            attempt,
            progress: None,
            cancel: None,
        }
    }

    /// Send [`Self::progress`] reports to `sink` (the worker's runner).
    pub fn with_progress(mut self, sink: ProgressSink) -> Self {
        self.progress = Some(sink);
        self
    }

    /// Cancelled when `cancel` turns `true` (the worker's runner).
    pub fn with_cancel(mut self, cancel: tokio::sync::watch::Receiver<bool>) -> Self {
        self.cancel = Some(cancel);
        self
    }

    /// Record how far the run is (`percent` 0..=100, else a fatal error), shown as the job's
    /// `progress`. Cheap: the worker keeps the latest report per job and writes it with its next
    /// batch of results, so calling it every few hundred ms costs no round trip per call.
    pub fn progress(&self, percent: u8, message: impl Into<String>) -> Result<(), JobError> {
        if percent > 100 {
            return Err(JobError::fatal(format!(
                "progress must be 0..=100 percent, got {percent}"
            )));
        }
        if let Some(sink) = &self.progress {
            sink(JobProgress {
                percent,
                message: message.into(),
            });
        }
        Ok(())
    }

    /// Whether the job was cancelled (`POST /api/jobs/{id}/cancel`).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Resolves once the job is cancelled (never, for a context without a cancel signal). The
    /// runner drops the run right after it is woken, so stop at once: a job can `select!` on this
    /// to leave a loop and return.
    pub async fn cancelled(&self) {
        if let Some(mut cancel) = self.cancel.clone() {
            if cancel.wait_for(|c| *c).await.is_ok() {
                return;
            }
        }
        std::future::pending::<()>().await;
    }
}

/// A failed run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct JobError {
    pub message: String,
    /// `false`: retrying cannot help (bad request, gone), the job is dead at once.
    pub retryable: bool,
}

impl JobError {
    /// A failure worth another attempt (timeouts, 5xx, connection errors).
    pub fn retry(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry can fix: the job goes dead now.
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// What is stored per job in apalis' data hash: `{"type", "payload"}`. Jobs stored before job
/// types were plug-ins read too: `{"type": "demo:delay_print", "message": ".."}` has its fields
/// beside `type`, which become the payload.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct JobEnvelope {
    #[serde(rename = "type")]
    pub job_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<Value>,
    /// Today's (legacy) layout: the payload's fields beside `type`.
    #[serde(flatten)]
    pub legacy: serde_json::Map<String, Value>,
}

impl JobEnvelope {
    pub fn new(job_type: &str, payload: Value) -> Self {
        Self {
            job_type: job_type.to_owned(),
            payload: Some(payload),
            legacy: Default::default(),
        }
    }

    pub fn into_payload(self) -> Value {
        self.payload.unwrap_or(Value::Object(self.legacy))
    }
}

/// A job type with its payload type erased, so types can sit in one map.
trait ErasedJobType: Send + Sync {
    fn validate(&self, payload: &Value) -> Result<(), String>;
    fn default_timeout(&self) -> Option<Duration>;
    fn redact(&self, payload: &mut Value);
    fn default_queue(&self) -> Option<&'static str>;
    fn limit_key(&self, payload: &Value) -> Option<String>;
    fn run<'a>(
        &'a self,
        payload: Value,
        ctx: &'a JobContext,
    ) -> BoxFuture<'a, Result<Option<String>, JobError>>;
    fn schemas(&self) -> Vec<NamedSchema>;
    fn result_schemas(&self) -> Vec<NamedSchema>;
}

/// A component schema and its name.
pub type NamedSchema = (String, RefOr<Schema>);

struct Erased<T> {
    job_type: T,
    schema: PayloadSchema,
}

impl<T: JobType> ErasedJobType for Erased<T> {
    fn validate(&self, payload: &Value) -> Result<(), String> {
        self.schema.check(payload)?;
        let typed = T::Payload::deserialize(&*self.schema.integral(payload))
            .map_err(|e| format!("payload: {e}"))?;
        self.job_type
            .validate(&typed)
            .map_err(|e| format!("payload: {e}"))
    }

    fn default_timeout(&self) -> Option<Duration> {
        self.job_type.default_timeout()
    }

    fn redact(&self, payload: &mut Value) {
        self.job_type.redact(payload);
    }

    fn default_queue(&self) -> Option<&'static str> {
        self.job_type.default_queue()
    }

    fn limit_key(&self, payload: &Value) -> Option<String> {
        let typed = T::Payload::deserialize(&*self.schema.integral(payload)).ok()?;
        self.job_type.limit_key(&typed)
    }

    fn run<'a>(
        &'a self,
        payload: Value,
        ctx: &'a JobContext,
    ) -> BoxFuture<'a, Result<Option<String>, JobError>> {
        Box::pin(async move {
            // Stored jobs were validated on enqueue; one that no longer reads cannot be fixed by a retry.
            let typed = T::Payload::deserialize(&*self.schema.integral(&payload))
                .map_err(|e| JobError::fatal(format!("payload does not match {}: {e}", T::NAME)))?;
            let output = self.job_type.run(typed, ctx).await?;
            stored_result(&output)
        })
    }

    fn schemas(&self) -> Vec<NamedSchema> {
        payload_schemas::<T>()
    }

    fn result_schemas(&self) -> Vec<NamedSchema> {
        let mut all = vec![(
            <T::Output as utoipa::ToSchema>::name().into_owned(),
            <T::Output as utoipa::PartialSchema>::schema(),
        )];
        <T::Output as utoipa::ToSchema>::schemas(&mut all);
        all
    }
}

/// A run's output as stored: `None` for `()`/`null`; over [`MAX_RESULT_BYTES`] the run fails
/// for good (the same run would give the same result).
fn stored_result<O: Serialize>(output: &O) -> Result<Option<String>, JobError> {
    let json = serde_json::to_string(output)
        .map_err(|e| JobError::fatal(format!("result cannot be serialised: {e}")))?;
    if json.len() > MAX_RESULT_BYTES {
        return Err(JobError::fatal(format!(
            "result too large: {} bytes serialised, at most {MAX_RESULT_BYTES} (64 KB) are stored",
            json.len()
        )));
    }
    Ok((json != "null").then_some(json))
}

/// The payload's (schema name, schema) first, then the schemas it refers to.
fn payload_schemas<T: JobType>() -> Vec<NamedSchema> {
    let mut all = vec![(
        <T::Payload as utoipa::ToSchema>::name().into_owned(),
        <T::Payload as utoipa::PartialSchema>::schema(),
    )];
    <T::Payload as utoipa::ToSchema>::schemas(&mut all);
    all
}

/// The job types a worker runs and an api accepts. Cheap to clone.
#[derive(Clone, Default)]
pub struct Registry {
    types: Arc<BTreeMap<&'static str, Arc<dyn ErasedJobType>>>,
}

impl Registry {
    /// Every production type: ONE LINE PER TYPE.
    pub fn production(settings: &JobqueueSettings) -> Self {
        Self::empty()
            .with(DelayPrint)
            .with(Webhook::new(&settings.webhook))
    }

    /// No types (tests and embedders build their own set).
    pub fn empty() -> Self {
        Self::default()
    }

    /// Add (or replace) a type, compiling its payload schema (start-up: a schema that does not
    /// compile is a bug in the type and stops the program here, naming it).
    pub fn with<T: JobType>(mut self, job_type: T) -> Self {
        let schema = PayloadSchema::compile(&payload_schemas::<T>())
            .unwrap_or_else(|e| panic!("job type {}: {e}", T::NAME));
        let erased = Erased { job_type, schema };
        Arc::make_mut(&mut self.types).insert(T::NAME, Arc::new(erased));
        self
    }

    /// The known type names, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.types.keys().copied().collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.types.contains_key(name)
    }

    /// Unknown type or a payload its type rejects → `Invalid` naming the types or the field.
    pub fn validate(&self, name: &str, payload: &Value) -> Result<(), JobQueueError> {
        self.get(name)?
            .validate(payload)
            .map_err(JobQueueError::Invalid)
    }

    /// The type's own timeout, if it has one.
    pub fn default_timeout(&self, name: &str) -> Option<Duration> {
        self.types.get(name).and_then(|t| t.default_timeout())
    }

    /// The limit key a job of type `name` with `payload` has by default, if any.
    pub fn limit_key(&self, name: &str, payload: &Value) -> Option<String> {
        self.types.get(name).and_then(|t| t.limit_key(payload))
    }

    /// The queue type `name` declares for its jobs, if any.
    pub fn default_queue(&self, name: &str) -> Option<&'static str> {
        self.types.get(name).and_then(|t| t.default_queue())
    }

    /// Hide the secrets of a payload of type `name` (unknown types are left as they are).
    pub fn redact(&self, name: &str, payload: &mut Value) {
        if let Some(t) = self.types.get(name) {
            t.redact(payload);
        }
    }

    /// Per type, for the OpenAPI spec: its payload's (schema name, schema) first, then the
    /// schemas the payload refers to.
    pub fn schemas(&self) -> Vec<(&'static str, Vec<NamedSchema>)> {
        self.types
            .iter()
            .map(|(name, t)| (*name, t.schemas()))
            .collect()
    }

    /// Per type, its result's (schema name, schema) first, then the schemas it refers to.
    pub fn result_schemas(&self) -> Vec<(&'static str, Vec<NamedSchema>)> {
        self.types
            .iter()
            .map(|(name, t)| (*name, t.result_schemas()))
            .collect()
    }

    /// Run `payload` as a job of type `name`: its result serialised (`None` for none); an
    /// unknown type is a fatal failure.
    pub async fn run(
        &self,
        name: &str,
        payload: Value,
        ctx: &JobContext,
    ) -> Result<Option<String>, JobError> {
        match self.types.get(name) {
            Some(t) => t.run(payload, ctx).await,
            None => Err(JobError::fatal(format!("unknown job type {name:?}"))),
        }
    }

    fn get(&self, name: &str) -> Result<&Arc<dyn ErasedJobType>, JobQueueError> {
        self.types.get(name).ok_or_else(|| {
            JobQueueError::Invalid(format!(
                "unknown job type {name:?}; known types: {}",
                self.names().join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_and_new_envelopes_read_the_same_payload() {
        let legacy: JobEnvelope =
            serde_json::from_str(r#"{"type":"demo:delay_print","message":"hi"}"#)
                .unwrap_or_else(|_| JobEnvelope::new("", Value::Null));
        let new: JobEnvelope =
            serde_json::from_str(r#"{"type":"demo:delay_print","payload":{"message":"hi"}}"#)
                .unwrap_or_else(|_| JobEnvelope::new("", Value::Null));
        assert_eq!(legacy.job_type, "demo:delay_print");
        assert_eq!(legacy.into_payload(), serde_json::json!({"message": "hi"}));
        assert_eq!(new.into_payload(), serde_json::json!({"message": "hi"}));
    }

    #[test]
    fn results_are_stored_up_to_64_kb() {
        assert_eq!(stored_result(&()), Ok(None));
        assert_eq!(
            stored_result(&serde_json::json!({"a": 1})),
            Ok(Some(r#"{"a":1}"#.to_owned()))
        );
        let fits = "x".repeat(MAX_RESULT_BYTES - 2);
        assert!(stored_result(&fits).is_ok_and(|r| r.is_some()));
        let err = stored_result(&format!("{fits}x")).unwrap_err();
        assert!(
            !err.retryable && err.message.contains("result too large"),
            "{err}"
        );
    }

    #[test]
    fn progress_is_0_to_100() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = seen.clone();
        let ctx = JobContext::new("id", 1).with_progress(Arc::new(move |p| {
            if let Ok(mut s) = sink.lock() {
                s.push(p.percent);
            }
        }));
        assert!(ctx.progress(0, "start").is_ok());
        assert!(ctx.progress(100, "end").is_ok());
        assert!(ctx.progress(101, "over").is_err_and(|e| !e.retryable));
        assert_eq!(*seen.lock().unwrap(), [0, 100]);
    }

    #[test]
    fn unknown_types_and_bad_payloads_are_named() {
        let r = Registry::empty().with(DelayPrint);
        let err = r
            .validate("nope", &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("demo:delay_print"), "{err}");
        let err = r
            .validate("demo:delay_print", &serde_json::json!({}))
            .unwrap_err()
            .to_string();
        assert!(err.contains("message"), "{err}");
    }
}
