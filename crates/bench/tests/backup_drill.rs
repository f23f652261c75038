//! Backups and restore of the jobqueue Redis (`scripts/backup.sh`, `scripts/restore.sh`), called
//! the way a user calls them: environment variables naming the Redis, its data dir and the
//! backup dir. The drill runs real processes (Redis, api, worker): jobs registered continuously
//! while a backup is taken every few seconds, then the Redis is SIGKILLed and its data dir
//! deleted, the newest backup restored, and RPO and RTO measured and printed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use cacheserver_bench::procs::{job_message, Lines};
use cacheserver_bench::stack::{Stack, HIGH_LIMIT};
use cacheserver_bench::{now_ms, workspace_root};
use cacheserver_testkit::{wait_until, RedisServer};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The drill's backup interval: the RPO it can promise is about this plus one backup's length.
const BACKUP_EVERY: Duration = Duration::from_secs(3);
const BACKUPS_BEFORE_LOSS: usize = 4;
const RPO_LIMIT_MS: u64 = 60_000;
const RTO_LIMIT: Duration = Duration::from_secs(300);

fn script(name: &str) -> PathBuf {
    workspace_root().join("scripts").join(name)
}

/// Run a script with `env`; bounded by `timeout`.
fn run(name: &str, args: &[&str], env: &[(&str, String)]) -> Output {
    Command::new("timeout")
        .arg("120")
        .arg(script(name))
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("run script")
}

fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// How a user points the scripts at one Redis.
fn redis_env(redis: &RedisServer, backups: &Path, run_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_PORT", redis.port().to_string()),
        ("REDIS_DATA_DIR", redis.dir().display().to_string()),
        ("BACKUP_DIR", backups.display().to_string()),
        ("BACKUP_KEEP", "3".into()),
        ("REDIS_START", "native".into()),
        ("REDIS_RUN_DIR", run_dir.display().to_string()),
        ("REDIS_LOG_DIR", run_dir.display().to_string()),
    ]
}

/// The newest backup, as `ls backups | tail -1` finds it.
fn newest_backup(backups: &Path) -> PathBuf {
    let mut names: Vec<String> = std::fs::read_dir(backups)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    backups.join(names.last().expect("a backup"))
}

fn manifest(dir: &Path) -> HashMap<String, String> {
    std::fs::read_to_string(dir.join("MANIFEST"))
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// What a restore would change: the data dir's siblings (`<dir>.replaced-*`, `<dir>.restore-*`)
/// and the AOF manifest (a restore swaps the whole dir).
fn data_dir_state(dir: &Path) -> (Vec<String>, String) {
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    let mut siblings: Vec<String> = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(&name))
        .collect();
    siblings.sort();
    let aof = std::fs::read_to_string(dir.join("appendonlydir/appendonly.aof.manifest"))
        .unwrap_or_default();
    (siblings, aof)
}

/// The Redis that `restore.sh` started (daemonized, pidfile in `run_dir`): killed on drop.
struct Restored(PathBuf);

impl Drop for Restored {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = Command::new("kill").args(["-9", pid.trim()]).status();
        }
    }
}

/// One registration the api answered 201: when it was sent and answered (unix ms), its delay.
#[derive(Clone, Debug)]
struct Accepted {
    sent_ms: u64,
    answered_ms: u64,
    delay_ms: u64,
}

#[derive(Default)]
struct Ledger {
    accepted: Mutex<HashMap<String, Accepted>>,
    next: AtomicUsize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_drill_restores_within_rpo_and_rto() {
    let bins = cacheserver_bench::debug_bin_dir();
    let mut stack = tokio::task::block_in_place(|| Stack::start(&bins)).expect("stack");
    let tmp = tempfile::tempdir().unwrap();
    let (backups, run_dir) = (tmp.path().join("backups"), tmp.path().join("run"));
    std::fs::create_dir_all(&run_dir).unwrap();
    let env = redis_env(&stack.jobqueue, &backups, &run_dir);
    let api = stack
        .api(
            "backup-api",
            0,
            &[
                ("APP__API__RATE_LIMIT__REQUESTS_PER_MINUTE", HIGH_LIMIT),
                ("APP__API__RATE_LIMIT__REQUESTS_PER_HOUR", HIGH_LIMIT),
                ("APP__JOBQUEUE__ENQUEUE_TIMEOUT", "1s"),
            ],
        )
        .await
        .expect("api");
    let lines = Arc::new(Lines::default());
    let _worker = stack
        .worker("backup-worker", 16, lines.clone())
        .await
        .expect("worker");

    // Registration never stops: jobs due 2..=9 s later, so many are still waiting at the loss.
    let ledger = Arc::new(Ledger::default());
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (http, base) = (stack.http().clone(), api.base.clone());
        let (ledger, stop) = (ledger.clone(), stop.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = ledger.next.fetch_add(1, Ordering::Relaxed);
                let message = format!("backup-drill-{i}");
                let delay = 2 + (i % 8) as u64;
                let sent_ms = now_ms();
                let r = http
                    .post(format!("{base}/api/dm-jobqueue/register"))
                    .json(&json!({"message": message, "delay_seconds": delay, "max_retry": 3}))
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().as_u16() == 201) {
                    let a = Accepted {
                        sent_ms,
                        answered_ms: now_ms(),
                        delay_ms: delay * 1000,
                    };
                    ledger.accepted.lock().unwrap().insert(message, a);
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
        })
    };

    // A backup every BACKUP_EVERY, as a timer would run it.
    for n in 0..BACKUPS_BEFORE_LOSS {
        tokio::time::sleep(BACKUP_EVERY).await;
        let out = tokio::task::block_in_place(|| run("backup.sh", &[], &env));
        assert!(out.status.success(), "backup {n}: {}", text(&out));
        print!("drill: {}", String::from_utf8_lossy(&out.stdout));
    }
    // Restore refuses while the api and the worker are connected (and changes nothing).
    let newest = newest_backup(&backups);
    let newest_arg = newest.display().to_string();
    let out = tokio::task::block_in_place(|| run("restore.sh", &[&newest_arg], &env));
    assert!(
        !out.status.success(),
        "restore with clients: {}",
        text(&out)
    );
    assert!(
        text(&out).contains("clients are connected"),
        "{}",
        text(&out)
    );
    assert_eq!(stack.jobqueue.cli(&["PING"]), "PONG");

    // The loss: SIGKILL and the data dir gone, just before the next backup would have run (the
    // worst case for this interval: the RPO window is a whole interval plus one backup).
    tokio::time::sleep(BACKUP_EVERY).await;
    let accepted_at_loss = ledger.accepted.lock().unwrap().len();
    let loss_ms = now_ms();
    let loss = Instant::now();
    stack.jobqueue.kill();
    std::fs::remove_dir_all(stack.jobqueue.dir()).unwrap();
    println!("drill: jobqueue Redis SIGKILLed and its data dir deleted ({accepted_at_loss} jobs accepted so far)");

    let newest = newest_backup(&backups);
    let newest_arg = newest.display().to_string();
    let out = tokio::task::block_in_place(|| run("restore.sh", &[&newest_arg], &env));
    let _restored = Restored(run_dir.join(format!("redis-{}.pid", stack.jobqueue.port())));
    assert!(out.status.success(), "restore: {}", text(&out));
    print!("drill: {}", String::from_utf8_lossy(&out.stdout));

    // RTO: from the loss to the first 201 after it.
    let first_201 = wait_until(Duration::from_secs(120), || {
        ledger
            .accepted
            .lock()
            .unwrap()
            .values()
            .any(|a| a.sent_ms > loss_ms)
    });
    assert!(first_201, "no 201 within 120 s of the restore");
    let rto = loss.elapsed();
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();

    // RPO: jobs answered 201 after the snapshot began may be missing; none before it.
    let m = manifest(&newest);
    let snapshot_ms: u64 = m["snapshot_started_ms"].parse().unwrap();
    let accepted = ledger.accepted.lock().unwrap().clone();
    let must_run: HashSet<&String> = accepted
        .iter()
        .filter(|(_, a)| a.answered_ms < snapshot_ms)
        .map(|(m, _)| m)
        .collect();
    let window: Vec<&String> = accepted
        .iter()
        .filter(|(_, a)| a.answered_ms >= snapshot_ms && a.sent_ms <= loss_ms)
        .map(|(m, _)| m)
        .collect();
    let rpo_ms = loss_ms.saturating_sub(snapshot_ms);

    // Every job accepted before the snapshot runs (the worker catches up on what fell due).
    let all_ran = wait_until(Duration::from_secs(60), || {
        let seen: HashSet<String> = lines
            .snapshot()
            .iter()
            .map(|(_, l)| job_message(l).to_owned())
            .collect();
        must_run.iter().all(|m| seen.contains(*m))
    });
    let runs = lines.snapshot();
    let seen: HashSet<&str> = runs.iter().map(|(_, l)| job_message(l)).collect();
    let missing: Vec<&&String> = must_run
        .iter()
        .filter(|m| !seen.contains(m.as_str()))
        .collect();
    let window_lost = window.iter().filter(|m| !seen.contains(m.as_str())).count();
    // Never early: a job's line cannot arrive before it was sent plus its delay.
    let early: Vec<String> = runs
        .iter()
        .filter_map(|(at, l)| {
            let a = accepted.get(job_message(l))?;
            (*at < a.sent_ms + a.delay_ms)
                .then(|| format!("{l} at {at}, due {}", a.sent_ms + a.delay_ms))
        })
        .collect();
    println!(
        "drill: backup every {}s; RPO window {:.1}s ({} jobs accepted after the snapshot began, {} of them lost); RTO {:.1}s (loss to first 201 after restore); {} jobs accepted before the snapshot, all ran: {}",
        BACKUP_EVERY.as_secs(),
        rpo_ms as f64 / 1000.0,
        window.len(),
        window_lost,
        rto.as_secs_f64(),
        must_run.len(),
        missing.is_empty()
    );
    assert!(
        !must_run.is_empty(),
        "no job was accepted before the snapshot"
    );
    assert!(
        all_ran,
        "jobs accepted before the snapshot never ran: {missing:?}"
    );
    assert!(early.is_empty(), "jobs ran early: {early:?}");
    assert!(rpo_ms < RPO_LIMIT_MS, "RPO {rpo_ms} ms");
    assert!(rto < RTO_LIMIT, "RTO {rto:?}");

    // A truncated RDB is refused and nothing is overwritten.
    let bad = tmp.path().join("truncated");
    copy_dir(&newest, &bad);
    let rdb = bad.join("dump.rdb");
    let len = std::fs::metadata(&rdb).unwrap().len();
    std::fs::File::options()
        .write(true)
        .open(&rdb)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let before = data_dir_state(stack.jobqueue.dir());
    let bad_arg = bad.display().to_string();
    let out = tokio::task::block_in_place(|| run("restore.sh", &["--force", &bad_arg], &env));
    assert!(!out.status.success(), "truncated restore: {}", text(&out));
    assert!(text(&out).contains("truncated"), "{}", text(&out));
    assert_eq!(stack.jobqueue.cli(&["PING"]), "PONG");
    assert_eq!(data_dir_state(stack.jobqueue.dir()), before);
    drop(api);
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// A Redis holding `n` keys of 512 random bytes (an RDB too big for a tiny disk).
fn redis_with_data(redis: &RedisServer, n: usize) {
    let script = "math.randomseed(7) for i = 1, tonumber(ARGV[1]) do local t = {} \
        for j = 1, 512 do t[j] = string.char(math.random(0, 255)) end \
        redis.call('HSET', 'dm-jobqueue:data', 'job-' .. i, table.concat(t)) end return 1";
    redis.cli(&["EVAL", script, "0", &n.to_string()]);
    redis.cli(&["ZADD", "dm-jobqueue:delayed", "1", "job-1"]);
}

/// Set `dump.rdb`'s bytes and its MANIFEST line (size, sha256) consistently.
fn rewrite_rdb(backup: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let rdb = backup.join("dump.rdb");
    let mut bytes = std::fs::read(&rdb).unwrap();
    edit(&mut bytes);
    std::fs::write(&rdb, &bytes).unwrap();
    let sum = Command::new("sha256sum").arg(&rdb).output().unwrap();
    let sum = String::from_utf8_lossy(&sum.stdout);
    let sum = sum.split_whitespace().next().unwrap();
    let manifest = std::fs::read_to_string(backup.join("MANIFEST")).unwrap();
    let manifest: String = manifest
        .lines()
        .map(|l| {
            if l.starts_with("file=dump.rdb ") {
                format!("file=dump.rdb {} {sum}\n", bytes.len())
            } else if l.starts_with("redis_version=") {
                "redis_version=99.0.0\n".to_owned()
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(backup.join("MANIFEST"), manifest).unwrap();
}

/// Bad backups are refused before anything is touched: the running Redis keeps its data.
#[test]
fn restore_refuses_bad_backups_and_leaves_redis_as_it_was() {
    let redis = RedisServer::start();
    redis_with_data(&redis, 50);
    let tmp = tempfile::tempdir().unwrap();
    let (backups, run_dir) = (tmp.path().join("backups"), tmp.path().join("run"));
    let env = redis_env(&redis, &backups, &run_dir);
    let out = run("backup.sh", &[], &env);
    assert!(out.status.success(), "{}", text(&out));
    let good = newest_backup(&backups);
    let out = run(
        "restore.sh",
        &["--verify-only", &good.display().to_string()],
        &env,
    );
    assert!(out.status.success(), "{}", text(&out));

    let refused = |dir: &Path, why: &str| {
        let before = data_dir_state(redis.dir());
        let out = run("restore.sh", &["--force", &dir.display().to_string()], &env);
        assert!(!out.status.success(), "{why}: {}", text(&out));
        assert!(text(&out).contains(why), "{why}: {}", text(&out));
        assert!(text(&out).contains("nothing changed"), "{}", text(&out));
        assert_eq!(redis.cli(&["HLEN", "dm-jobqueue:data"]), "50");
        assert_eq!(data_dir_state(redis.dir()), before);
    };
    // Not a backup at all.
    refused(tmp.path(), "is not a backup");
    // A manifest that does not match its files (same size, one byte flipped).
    let flipped = tmp.path().join("flipped");
    copy_dir(&good, &flipped);
    let rdb = flipped.join("dump.rdb");
    let mut bytes = std::fs::read(&rdb).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&rdb, bytes).unwrap();
    refused(&flipped, "does not match its sha256");
    // Written by a Redis newer than this one (RDB format 99), the manifest consistent with it.
    let newer = tmp.path().join("newer");
    copy_dir(&good, &newer);
    rewrite_rdb(&newer, |b| b[..9].copy_from_slice(b"REDIS0099"));
    refused(&newer, "cannot read it");
    // Truncated, with a manifest that matches the truncated file: redis-check-rdb catches it.
    let cut = tmp.path().join("cut");
    copy_dir(&good, &cut);
    rewrite_rdb(&cut, |b| b.truncate(b.len() / 2));
    refused(&cut, "fails redis-check-rdb");
}

/// A tiny filesystem for BACKUP_DIR: a 256 KiB tmpfs when this process may mount one (root),
/// else a 64 KiB file-size limit (`ulimit -f`) on the script: the write fails either way.
struct TinyDisk {
    dir: PathBuf,
    mounted: bool,
}

impl TinyDisk {
    fn new(dir: PathBuf) -> Self {
        std::fs::create_dir_all(&dir).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
            .arg(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        Self { dir, mounted }
    }

    fn run_backup(&self, env: &[(&str, String)]) -> Output {
        let mut cmd = Command::new("bash");
        if self.mounted {
            cmd.arg("-c").arg("exec \"$0\"");
        } else {
            cmd.arg("-c").arg("ulimit -f 64; exec \"$0\"");
        }
        cmd.arg(script("backup.sh"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .output()
            .unwrap()
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.dir).status();
        }
    }
}

#[test]
fn backup_onto_a_full_disk_fails_cleanly() {
    let redis = RedisServer::start();
    redis_with_data(&redis, 2000);
    let tmp = tempfile::tempdir().unwrap();
    let disk = TinyDisk::new(tmp.path().join("tiny"));
    let env = redis_env(&redis, &disk.dir, tmp.path());
    let keys = redis.cli(&["DBSIZE"]);
    let out = disk.run_backup(&env);
    println!(
        "full disk ({}): {}",
        if disk.mounted {
            "256 KiB tmpfs"
        } else {
            "ulimit -f 64"
        },
        String::from_utf8_lossy(&out.stderr).trim()
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("cannot write the backup"),
        "{}",
        text(&out)
    );
    // No half backup left behind, Redis as it was.
    let left: Vec<_> = std::fs::read_dir(&disk.dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != ".lock")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert_eq!(redis.cli(&["DBSIZE"]), keys);
    assert_eq!(redis.cli(&["PING"]), "PONG");
}

/// The documented least-rights user (deploy/redis/cacheserver-backup.acl) can take both kinds of
/// backup; with Sentinel the backup comes from a replica.
#[test]
fn backup_user_and_sentinel_replica() {
    let redis = RedisServer::start_with_password("admin-secret");
    let rules =
        std::fs::read_to_string(workspace_root().join("deploy/redis/cacheserver-backup.acl"))
            .unwrap();
    redis.add_acl_user("cacheserver-backup", rules.trim(), "backup-secret");
    redis_with_data(&redis, 10);
    let tmp = tempfile::tempdir().unwrap();
    let password = tmp.path().join("backup.password");
    std::fs::write(&password, "backup-secret\n").unwrap();
    let backups = tmp.path().join("backups");
    let mut env = redis_env(&redis, &backups, tmp.path());
    env.push(("REDIS_USER", "cacheserver-backup".into()));
    env.push(("REDIS_PASSWORD_FILE", password.display().to_string()));
    // The last one through a REDIS_CLI prefix, as for a container that publishes no port
    // (`docker compose exec -T -e REDISCLI_AUTH redis-jobqueue redis-cli`): the RDB on stdout.
    for (method, cli) in [
        ("local", None),
        ("protocol", None),
        ("protocol", Some("env redis-cli")),
    ] {
        let mut env = env.clone();
        env.push(("BACKUP_METHOD", method.into()));
        if let Some(cli) = cli {
            env.push(("REDIS_CLI", cli.into()));
        }
        let out = run("backup.sh", &[], &env);
        assert!(out.status.success(), "{method}: {}", text(&out));
        let m = manifest(&newest_backup(&backups));
        assert_eq!(m["method"], method);
        assert_eq!(m["queue.dm-jobqueue.jobs"], "10");
        assert_eq!(m["queue.dm-jobqueue.delayed"], "1");
    }
    // The RDB that came through stdout is exact (its size and sha256 in the MANIFEST) and loads.
    let newest = newest_backup(&backups).display().to_string();
    let out = run("restore.sh", &["--verify-only", &newest], &env);
    assert!(out.status.success(), "{}", text(&out));
    // A wrong password: a clear error, no backup.
    std::fs::write(&password, "wrong\n").unwrap();
    let out = run("backup.sh", &[], &env);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("cannot reach"), "{}", text(&out));

    let set = cacheserver_testkit::SentinelSet::start();
    set.node(0).cli(&["HSET", "dm-jobqueue:data", "a", "1"]);
    let replicated = wait_until(Duration::from_secs(10), || {
        set.node(1).cli(&["HLEN", "dm-jobqueue:data"]) == "1"
            && set.node(2).cli(&["HLEN", "dm-jobqueue:data"]) == "1"
    });
    assert!(replicated);
    let backups = tmp.path().join("sentinel-backups");
    let env = [
        ("REDIS_SENTINEL", set.sentinel_addrs().join(",")),
        (
            "REDIS_MASTER_NAME",
            cacheserver_testkit::SENTINEL_MASTER_NAME.into(),
        ),
        ("BACKUP_DIR", backups.display().to_string()),
    ];
    let out = run("backup.sh", &[], &env);
    assert!(out.status.success(), "{}", text(&out));
    let m = manifest(&newest_backup(&backups));
    assert_eq!(m["source_role"], "slave", "{m:?}");
    assert_ne!(m["source"], set.node(0).addr());
    assert_eq!(m["queue.dm-jobqueue.jobs"], "1");
}
