//! The quiet gate: before a timed phase, wait (bounded) until the rest of the machine is nearly
//! idle. "Other load" is the CPU the whole machine used (`/proc/stat`) minus what this process and
//! its descendants (the Redis servers, api, worker, Node processes it started) used over the same
//! window, in cores. A phase that starts while other load is still above the threshold is marked
//! busy in the report: its figure shares the cores with someone else's work.

use crate::resources::process_cpu_secs;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Other load below this many cores counts as quiet.
pub const QUIET_CORES: f64 = 0.15;
/// One measurement window of the gate.
const WINDOW: Duration = Duration::from_millis(500);

/// What the gate saw before one phase.
#[derive(Debug, Clone)]
pub struct Gate {
    pub phase: String,
    /// Other load (cores) over the last window before the phase started.
    pub other_cores: f64,
    /// How long the gate waited.
    pub waited: Duration,
}

impl Gate {
    pub fn busy(&self) -> bool {
        self.other_cores >= QUIET_CORES
    }

    pub fn describe(&self) -> String {
        format!(
            "{}: other load {:.2} core after {:.1} s{}",
            self.phase,
            self.other_cores,
            self.waited.as_secs_f64(),
            if self.busy() { " (BUSY)" } else { "" }
        )
    }
}

/// Wait up to `bound` for other load < [`QUIET_CORES`]; returns what was seen last.
pub async fn wait(phase: &str, bound: Duration) -> Gate {
    let started = Instant::now();
    loop {
        let other_cores = other_load(WINDOW.min(bound.max(Duration::from_millis(100)))).await;
        let waited = started.elapsed();
        if other_cores < QUIET_CORES || waited >= bound {
            let gate = Gate {
                phase: phase.to_owned(),
                other_cores,
                waited,
            };
            println!("bench: gate {}", gate.describe());
            return gate;
        }
    }
}

/// CPU (cores) used by everything but this process tree over `window`.
pub async fn other_load(window: Duration) -> f64 {
    let (busy0, own0) = (machine_busy_secs(), own_cpu_secs());
    let started = Instant::now();
    tokio::time::sleep(window).await;
    let secs = started.elapsed().as_secs_f64().max(0.001);
    let (busy1, own1) = (machine_busy_secs(), own_cpu_secs());
    // Processes of ours that ended during the window drop out of `own1`: clamp at 0.
    (((busy1 - busy0) - (own1 - own0).max(0.0)) / secs).max(0.0)
}

/// Non-idle CPU seconds of the whole machine (the `cpu` line of /proc/stat: all but idle and
/// iowait; guest time is already inside user).
fn machine_busy_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0.0;
    };
    let ticks: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal [guest guest_nice]
    let busy: f64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    busy / crate::resources::clock_ticks()
}

/// CPU seconds of this process and all its descendants.
fn own_cpu_secs() -> f64 {
    let me = std::process::id();
    let mut parent_of: HashMap<u32, u32> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_pid(pid) {
                parent_of.insert(pid, ppid);
            }
        }
    }
    let ours = |mut pid: u32| {
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match parent_of.get(&pid) {
                Some(&p) if p != 0 && p != pid => pid = p,
                _ => return false,
            }
        }
        false
    };
    parent_of
        .keys()
        .filter(|&&pid| ours(pid))
        .filter_map(|&pid| process_cpu_secs(pid))
        .sum()
}

fn parent_pid(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // After the command name: state, ppid.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_busy_grows_and_own_cpu_is_counted() {
        let before = machine_busy_secs();
        let own = own_cpu_secs();
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        assert!(machine_busy_secs() > before);
        assert!(own_cpu_secs() > own);
    }
}
