//! A Sentinel-managed Redis on loopback: a master, two replicas and three sentinels (quorum 2),
//! with a short `down-after-milliseconds` so failover tests finish in seconds.

use crate::server::{redis_cli, RedisServer};
use crate::{free_port, wait_until};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const MASTER_NAME: &str = "cacheserver-jq";

pub struct SentinelSet {
    /// Index 0 starts as the master.
    nodes: Vec<RedisServer>,
    sentinels: Vec<Sentinel>,
}

struct Sentinel {
    port: u16,
    _dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SentinelSet {
    /// Start master + 2 replicas + 3 sentinels and wait until every sentinel sees both replicas
    /// and the other sentinels (so a failover can be authorised at once).
    pub fn start() -> Self {
        let master = RedisServer::start_with(|_| (Vec::new(), Vec::new()));
        let master_port = master.port().to_string();
        let mut nodes = vec![master];
        for _ in 0..2 {
            let args = vec![
                "--replicaof".into(),
                "127.0.0.1".into(),
                master_port.clone(),
            ];
            nodes.push(RedisServer::start_with(|_| (args, Vec::new())));
        }
        let synced = wait_until(Duration::from_secs(30), || {
            nodes[0]
                .try_cli(&["INFO", "replication"])
                .is_ok_and(|i| i.contains("connected_slaves:2"))
        });
        assert!(synced, "replicas did not attach");
        let sentinels = (0..3).map(|_| Sentinel::start(&master_port)).collect();
        let set = Self { nodes, sentinels };
        let ready = wait_until(Duration::from_secs(30), || {
            set.sentinels.iter().all(|s| {
                redis_cli(s.port, &["SENTINEL", "MASTER", MASTER_NAME]).is_ok_and(|m| {
                    let lines: Vec<&str> = m.lines().collect();
                    let field = |name: &str| {
                        lines
                            .iter()
                            .position(|l| *l == name)
                            .and_then(|i| lines.get(i + 1))
                            .and_then(|v| v.parse::<u32>().ok())
                    };
                    field("num-slaves") == Some(2) && field("num-other-sentinels") == Some(2)
                })
            })
        });
        assert!(
            ready,
            "sentinels did not discover the replicas and each other"
        );
        set
    }

    /// `127.0.0.1:<port>` of every sentinel.
    pub fn sentinel_addrs(&self) -> Vec<String> {
        self.sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect()
    }

    /// The master's `host:port` as the first answering sentinel reports it.
    pub fn master_addr(&self) -> Option<String> {
        self.sentinels.iter().find_map(|s| {
            let reply = redis_cli(
                s.port,
                &["SENTINEL", "GET-MASTER-ADDR-BY-NAME", MASTER_NAME],
            )
            .ok()?;
            let mut parts = reply.lines();
            Some(format!("{}:{}", parts.next()?, parts.next()?))
        })
    }

    /// Index of the node that is master now (per the sentinels).
    pub fn master_index(&self) -> Option<usize> {
        let addr = self.master_addr()?;
        self.nodes.iter().position(|n| n.addr() == addr)
    }

    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    /// SIGKILL the current master; returns its index.
    pub fn kill_master(&mut self) -> usize {
        let index = self.master_index().expect("a master");
        self.nodes[index].kill();
        index
    }

    /// Wait until the sentinels name a running node other than `old` as master and it says
    /// `role:master`.
    pub fn wait_for_new_master(&self, old: usize, timeout: Duration) -> Option<usize> {
        let mut found = None;
        wait_until(timeout, || {
            found = self.master_index().filter(|&i| {
                i != old
                    && self.nodes[i].is_running()
                    && self.nodes[i]
                        .try_cli(&["ROLE"])
                        .is_ok_and(|r| r.starts_with("master"))
            });
            found.is_some()
        });
        found
    }
}

impl Sentinel {
    fn start(master_port: &str) -> Self {
        let port = free_port();
        let dir = tempfile::Builder::new()
            .prefix("cacheserver-sentinel-")
            .tempdir()
            .expect("temp dir");
        let conf = dir.path().join("sentinel.conf");
        let text = format!(
            "port {port}\nbind 127.0.0.1\nprotected-mode no\ndir {dir}\n\
             sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
             sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
             sentinel failover-timeout {MASTER_NAME} 5000\n\
             sentinel parallel-syncs {MASTER_NAME} 2\n",
            dir = dir.path().display()
        );
        std::fs::write(&conf, text).expect("write sentinel.conf");
        let log = std::fs::File::create(dir.path().join("sentinel.log")).expect("log");
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn redis-server --sentinel");
        let up = wait_until(Duration::from_secs(10), || {
            redis_cli(port, &["PING"]).is_ok_and(|r| r == "PONG")
        });
        assert!(up, "sentinel on {port} did not start");
        Self {
            port,
            _dir: dir,
            child,
        }
    }
}
