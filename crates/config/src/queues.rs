//! Named queues: `jobqueue.queues` (declared queues and their weights), which queues a worker
//! serves (`jobqueue.worker.queues` / `--queues`, `--strict`), and the one rule for a queue name.

use serde::Deserialize;
use std::time::Duration;

/// Longest queue name.
pub const MAX_QUEUE_NAME: usize = 64;
/// Largest weight of a served queue.
pub const MAX_QUEUE_WEIGHT: u32 = 1_000;

/// One entry of `jobqueue.queues`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSettings {
    /// `[A-Za-z0-9_.-]{1,64}`.
    pub name: String,
    /// Fetch turns a worker serving the declared queues gives it, relative to the others
    /// (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// At most this many jobs of the queue running at once across all workers (none: no limit).
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// At most `max` job starts per `per` across all workers (none: no limit).
    #[serde(default)]
    pub rate_limit: Option<QueueRateLimit>,
    /// Per limit key (a job's `limit_key`): at most this many of one key's jobs running at once.
    #[serde(default)]
    pub key_concurrency: Option<u32>,
    /// Per limit key: at most `max` starts of one key's jobs per `per`.
    #[serde(default)]
    pub key_rate_limit: Option<QueueRateLimit>,
}

/// `rate_limit: {max: 100, per: 1m}` of a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueRateLimit {
    /// Starts allowed per window, 1..=[`MAX_RATE_MAX`].
    pub max: u32,
    /// The (sliding) window, 1ms..=[`MAX_RATE_PER`].
    #[serde(deserialize_with = "crate::duration::deserialize")]
    pub per: Duration,
}

/// Largest `concurrency` of a queue.
pub const MAX_QUEUE_CONCURRENCY: u32 = 100_000;
/// Largest `rate_limit.max` (the window keeps one entry per start).
pub const MAX_RATE_MAX: u32 = 100_000;
/// Longest `rate_limit.per`.
pub const MAX_RATE_PER: Duration = Duration::from_secs(24 * 3600);

fn one() -> u32 {
    1
}

/// A queue a worker serves and its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedQueue {
    pub name: String,
    pub weight: u32,
}

/// Why `name` is not a queue name, if it is not one: 1–64 of `A-Z a-z 0-9 _ . -`.
pub fn queue_name_problem(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_QUEUE_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    (!ok).then(|| format!("queue `{name}` must be 1..={MAX_QUEUE_NAME} of A-Z a-z 0-9 _ . -"))
}

/// `critical=6,default=3,low` → the queues in order, a missing weight being 1.
pub fn parse_served_queues(text: &str) -> Result<Vec<ServedQueue>, String> {
    let mut out: Vec<ServedQueue> = Vec::new();
    for item in text.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let (name, weight) = match item.split_once('=') {
            Some((name, weight)) => {
                let weight = weight.trim().parse::<u32>().map_err(|_| {
                    format!("`{item}`: the weight must be a whole number 1..={MAX_QUEUE_WEIGHT}")
                })?;
                (name.trim(), weight)
            }
            None => (item, 1),
        };
        if let Some(problem) = queue_name_problem(name) {
            return Err(problem);
        }
        if !(1..=MAX_QUEUE_WEIGHT).contains(&weight) {
            return Err(format!(
                "`{item}`: the weight must be 1..={MAX_QUEUE_WEIGHT}"
            ));
        }
        if out.iter().any(|q| q.name == name) {
            return Err(format!("queue `{name}` is named twice"));
        }
        out.push(ServedQueue {
            name: name.to_owned(),
            weight,
        });
    }
    Ok(out)
}

/// The queues a worker serves without `--queues`: the default queue, then every declared queue
/// with its weight (the default queue too takes its declared weight when declared).
pub fn default_served_queues(default_queue: &str, declared: &[QueueSettings]) -> Vec<ServedQueue> {
    let mut out = vec![ServedQueue {
        name: default_queue.to_owned(),
        weight: declared
            .iter()
            .find(|q| q.name == default_queue)
            .map_or(1, |q| q.weight),
    }];
    out.extend(
        declared
            .iter()
            .filter(|q| q.name != default_queue)
            .map(|q| ServedQueue {
                name: q.name.clone(),
                weight: q.weight,
            }),
    );
    out
}

/// Why a `{max, per}` rate is out of range, if it is (`field` names it).
pub fn rate_problem(field: &str, rate: &QueueRateLimit) -> Option<String> {
    if !(1..=MAX_RATE_MAX).contains(&rate.max) {
        return Some(format!("{field}.max: must be 1..={MAX_RATE_MAX}"));
    }
    if rate.per < Duration::from_millis(1) || rate.per > MAX_RATE_PER {
        return Some(format!("{field}.per: must be 1ms..=24h, like `1s` or `1m`"));
    }
    None
}

/// The first problem of `jobqueue.queues`, naming the entry's index and field.
pub fn validate_declared(declared: &[QueueSettings]) -> Result<(), String> {
    let mut names = std::collections::HashSet::new();
    for (i, q) in declared.iter().enumerate() {
        if let Some(problem) = queue_name_problem(&q.name) {
            return Err(format!("[{i}].name: {problem}"));
        }
        if !names.insert(&q.name) {
            return Err(format!("[{i}].name: `{}` is declared twice", q.name));
        }
        if !(1..=MAX_QUEUE_WEIGHT).contains(&q.weight) {
            return Err(format!("[{i}].weight: must be 1..={MAX_QUEUE_WEIGHT}"));
        }
        if q.concurrency
            .is_some_and(|c| !(1..=MAX_QUEUE_CONCURRENCY).contains(&c))
        {
            return Err(format!(
                "[{i}].concurrency: must be 1..={MAX_QUEUE_CONCURRENCY} (leave it out for no limit)"
            ));
        }
        if q.key_concurrency
            .is_some_and(|c| !(1..=MAX_QUEUE_CONCURRENCY).contains(&c))
        {
            return Err(format!(
                "[{i}].key_concurrency: must be 1..={MAX_QUEUE_CONCURRENCY} (leave it out for no limit)"
            ));
        }
        for (field, rate) in [
            ("rate_limit", q.rate_limit),
            ("key_rate_limit", q.key_rate_limit),
        ] {
            if let Some(problem) = rate.and_then(|r| rate_problem(&format!("[{i}].{field}"), &r)) {
                return Err(problem);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn served_queues_parse_with_weights() {
        let q = parse_served_queues("critical=6, default=3,low").unwrap_or_default();
        let pairs: Vec<(&str, u32)> = q.iter().map(|q| (q.name.as_str(), q.weight)).collect();
        assert_eq!(pairs, [("critical", 6), ("default", 3), ("low", 1)]);
        for bad in ["a=0", "a=x", "a b=1", "a,a", "{a}=1", "a=1001"] {
            assert!(parse_served_queues(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_are_checked_naming_the_entry_and_field() {
        let entry = |concurrency, rate_limit| QueueSettings {
            name: "q".into(),
            weight: 1,
            concurrency,
            rate_limit,
            key_concurrency: None,
            key_rate_limit: None,
        };
        let rate = |max, per| {
            Some(QueueRateLimit {
                max,
                per: Duration::from_millis(per),
            })
        };
        assert!(validate_declared(&[entry(Some(5), rate(100, 60_000))]).is_ok());
        assert!(validate_declared(&[entry(None, None)]).is_ok());
        for (bad, field) in [
            (entry(Some(0), None), "[0].concurrency"),
            (entry(None, rate(0, 1000)), "[0].rate_limit.max"),
            (entry(None, rate(10, 0)), "[0].rate_limit.per"),
            (
                entry(None, rate(10, 25 * 3600 * 1000)),
                "[0].rate_limit.per",
            ),
        ] {
            let problem = validate_declared(&[bad]).err().unwrap_or_default();
            assert!(problem.starts_with(field), "{problem}");
        }
    }

    #[test]
    fn names_follow_one_rule() {
        assert!(queue_name_problem("dm-jobqueue").is_none());
        assert!(queue_name_problem("a.b_c-9").is_none());
        for bad in ["", "a:b", "{a}", "a b", &"x".repeat(65)] {
            assert!(queue_name_problem(bad).is_some(), "{bad}");
        }
    }
}
