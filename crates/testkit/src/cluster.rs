use crate::server::{admin_cli_args, RedisServer};
use crate::TestCerts;
use crate::{free_cluster_port, wait_until};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Cluster node timeout: short, so that failover tests finish in seconds.
const NODE_TIMEOUT_MS: &str = "1000";

/// A 3-master + 3-replica Redis Cluster on loopback. Nodes 0..3 start as masters.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// redis-cli arguments every node needs (TLS, password).
    cli_args: Vec<String>,
}

impl RedisCluster {
    /// Start six nodes, create the cluster and wait for `cluster_state:ok` everywhere.
    pub fn start() -> Self {
        let mut cluster = Self::reserve();
        cluster.create();
        cluster
    }

    /// Like `start`, with TLS everywhere (`--tls-cluster yes`, `--tls-replication yes`, no
    /// plain-text port) and/or `requirepass` (replicas use it as `masterauth`).
    pub fn start_secure(certs: Option<&TestCerts>, password: Option<&str>) -> Self {
        let mut cluster = Self::reserve_secure(certs, password);
        cluster.create();
        cluster
    }

    /// Pick ports and dirs but start nothing (for "cluster down at start" tests).
    pub fn reserve() -> Self {
        Self::reserve_secure(None, None)
    }

    fn reserve_secure(certs: Option<&TestCerts>, password: Option<&str>) -> Self {
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let port = free_cluster_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let mut cli_args = Vec::new();
        if let Some(certs) = certs {
            cli_args.extend(certs.cli_args());
        }
        if let Some(password) = password {
            cli_args.extend(admin_cli_args(password));
        }
        let secure = |p: u16| {
            let mut args = Vec::new();
            if let Some(certs) = certs {
                args.extend(certs.server_args(p, false));
                args.extend(["--tls-cluster", "yes", "--tls-replication", "yes"].map(String::from));
            }
            if let Some(password) = password {
                args.extend(
                    ["--requirepass", password, "--masterauth", password].map(String::from),
                );
            }
            args
        };
        let args = |p: u16| {
            let mut args: Vec<String> = vec![
                "--cluster-enabled".into(),
                "yes".into(),
                "--cluster-config-file".into(),
                format!("nodes-{p}.conf"),
                "--cluster-node-timeout".into(),
                NODE_TIMEOUT_MS.into(),
                // A replica may take over however stale its data looks (tests kill masters early).
                "--cluster-replica-validity-factor".into(),
                "0".into(),
                // As deployed (scripts/start-redis.sh): big limiter hashes are freed off-thread.
                "--lazyfree-lazy-expire".into(),
                "yes".into(),
            ];
            args.extend(secure(p));
            args
        };
        Self {
            nodes: ports
                .into_iter()
                .map(|p| RedisServer::reserve_with(p, args(p)).with_cli_args(cli_args.clone()))
                .collect(),
            cli_args,
        }
    }

    /// Start the nodes and form the cluster (once), or restart stopped nodes of a formed cluster.
    pub fn create(&mut self) {
        for node in &mut self.nodes {
            node.restart();
        }
        let formed = self.nodes[0]
            .try_cli(&["CLUSTER", "INFO"])
            .is_ok_and(|info| info.contains("cluster_known_nodes:6"));
        if !formed {
            let addrs: Vec<String> = self.nodes.iter().map(RedisServer::addr).collect();
            let output = Command::new("timeout")
                .args(["60", "redis-cli"])
                .args(&self.cli_args)
                .args(["--cluster", "create"])
                .args(&addrs)
                .args(["--cluster-replicas", "1", "--cluster-yes"])
                .stdin(Stdio::null())
                .output()
                .expect("run redis-cli --cluster create");
            assert!(
                output.status.success(),
                "cluster create failed: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        self.wait_ok();
    }

    /// Wait until every running node reports `cluster_state:ok` and sees all slots.
    pub fn wait_ok(&self) {
        let ok = wait_until(Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.try_cli(&["CLUSTER", "INFO"]).is_ok_and(|i| {
                    i.contains("cluster_state:ok") && i.contains("cluster_slots_ok:16384")
                })
            })
        });
        assert!(ok, "cluster did not reach cluster_state:ok");
        let synced = wait_until(Duration::from_secs(30), || {
            self.nodes.iter().filter(|n| n.is_running()).all(|n| {
                n.try_cli(&["INFO", "replication"])
                    .is_ok_and(|i| i.contains("role:master") || i.contains("master_link_status:up"))
            })
        });
        assert!(synced, "replicas did not finish their first sync");
    }

    /// Seed addresses `127.0.0.1:<port>` of all six nodes.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::addr).collect()
    }

    pub fn node(&self, index: usize) -> &RedisServer {
        &self.nodes[index]
    }

    pub fn node_mut(&mut self, index: usize) -> &mut RedisServer {
        &mut self.nodes[index]
    }

    /// Indices of running nodes that are masters now.
    pub fn masters(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].is_running())
            .filter(|&i| {
                self.nodes[i]
                    .try_cli(&["ROLE"])
                    .is_ok_and(|r| r.starts_with("master"))
            })
            .collect()
    }

    /// Index of the running master that serves `key` now.
    pub fn master_for_key(&self, key: &str) -> usize {
        let node = self
            .nodes
            .iter()
            .find(|n| n.is_running())
            .expect("a running node");
        let slot: u16 = node
            .try_cli(&["CLUSTER", "KEYSLOT", key])
            .expect("keyslot")
            .parse()
            .expect("slot");
        self.masters()
            .into_iter()
            .find(|&i| self.owns_slot(i, slot))
            .expect("a master owns the slot")
    }

    /// Reads the node's own line of `CLUSTER NODES`: `<id> <addr> myself,master ... 0-5460 ...`.
    fn owns_slot(&self, index: usize, slot: u16) -> bool {
        let Ok(nodes) = self.nodes[index].try_cli(&["CLUSTER", "NODES"]) else {
            return false;
        };
        let Some(me) = nodes.lines().find(|l| l.contains("myself")) else {
            return false;
        };
        me.split_whitespace().skip(8).any(|range| {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            matches!((start.parse::<u16>(), end.parse::<u16>()), (Ok(s), Ok(e)) if (s..=e).contains(&slot))
        })
    }

    /// SIGKILL every node (ports stay reserved for `create`).
    pub fn kill_all(&mut self) {
        for node in &mut self.nodes {
            node.kill();
        }
    }
}
