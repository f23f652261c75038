//! Server-assisted client-side caching on the cluster: a dedicated RESP3 client with
//! `CLIENT TRACKING ON BCAST PREFIX ...` on every primary, so every change of a key under the
//! prefixes (write, delete, expiry, eviction) is pushed to this process.
//!
//! fred's `start_tracking` sends a BCAST `CLIENT TRACKING` to one node only in a cluster (BCAST
//! tracks the writes of the node that receives it), so the supervisor sends it to each primary
//! itself, again after every reconnect or topology change, and pings every primary on the
//! tracking connections each heartbeat. What the owner may trust is told by [`TrackingEvent`]s.

use fred::interfaces::{
    ClientInterface, ClientLike, ClusterInterface, EventInterface, TrackingInterface,
};
use fred::prelude::{Client, Server};
use fred::types::Key;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::broadcast::Receiver;
use tokio::task::JoinHandle;

use crate::RedisError;

/// What the owner of a local copy learns from the tracking client, in order per kind.
#[derive(Debug, Clone)]
pub enum TrackingEvent {
    /// These keys changed (written, deleted, expired or evicted) on the cluster.
    Invalidate(Vec<Key>),
    /// Invalidations may have been lost (the listener fell behind): drop every local copy.
    /// Tracking itself is still on.
    Flush,
    /// Tracking is on on every primary and each answered a PING: what was not invalidated may
    /// be trusted until `until`.
    Verified { until: Instant },
    /// A tracking connection was lost or replaced, or the topology changed: invalidations may
    /// be missing. Drop every local copy and trust nothing until the next `Verified`.
    Down,
}

/// The running tracking client; dropping it stops its tasks and closes its connections.
pub struct Tracking {
    client: Client,
    tasks: Vec<JoinHandle<()>>,
    registry: Arc<Mutex<Vec<Client>>>,
}

impl Drop for Tracking {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Ok(mut clients) = self.registry.lock() {
            clients.retain(|c| c.id() != self.client.id());
        }
        let client = self.client.clone();
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let _ = client.quit().await;
            });
        }
    }
}

type Emit = Arc<dyn Fn(TrackingEvent) + Send + Sync>;

/// Build and start the tracking client (within a tokio runtime). `heartbeat`: how often every
/// primary is pinged; `Verified` lasts two heartbeats.
pub(crate) fn start(
    client: Client,
    registry: Arc<Mutex<Vec<Client>>>,
    prefixes: Vec<String>,
    heartbeat: Duration,
    emit: Emit,
) -> Result<Tracking, RedisError> {
    tokio::runtime::Handle::try_current()
        .map_err(|_| RedisError::Config("client tracking needs a tokio runtime".into()))?;
    // Subscribe before connecting: no event of the first connection is missed.
    let invalidations = client.invalidation_rx();
    let events = Events {
        errors: client.error_rx(),
        reconnects: client.reconnect_rx(),
        changes: client.cluster_change_rx(),
    };
    drop(client.connect());
    if let Ok(mut clients) = registry.lock() {
        clients.push(client.clone());
    }
    let listener = tokio::spawn(listen(invalidations, emit.clone()));
    let supervisor = tokio::spawn(supervise(client.clone(), events, prefixes, heartbeat, emit));
    Ok(Tracking {
        client,
        tasks: vec![listener, supervisor],
        registry,
    })
}

async fn listen(mut rx: Receiver<fred::types::client::Invalidation>, emit: Emit) {
    loop {
        match rx.recv().await {
            Ok(message) => emit(TrackingEvent::Invalidate(message.keys)),
            Err(RecvError::Lagged(n)) => {
                tracing::warn!(
                    lost = n,
                    "client tracking listener fell behind; local copies dropped"
                );
                emit(TrackingEvent::Flush);
            }
            Err(RecvError::Closed) => return,
        }
    }
}

struct Events {
    errors: Receiver<(fred::error::Error, Option<Server>)>,
    reconnects: Receiver<Server>,
    changes: Receiver<Vec<fred::types::ClusterStateChange>>,
}

impl Events {
    /// Whether a connection event is waiting (drains them all).
    fn pending(&mut self) -> bool {
        let mut any = false;
        loop {
            let seen = drained(self.errors.try_recv())
                | drained(self.reconnects.try_recv())
                | drained(self.changes.try_recv());
            if !seen {
                return any;
            }
            any = true;
        }
    }
}

fn drained<T>(r: Result<T, TryRecvError>) -> bool {
    matches!(r, Ok(_) | Err(TryRecvError::Lagged(_)))
}

async fn supervise(
    client: Client,
    mut events: Events,
    prefixes: Vec<String>,
    heartbeat: Duration,
    emit: Emit,
) {
    let budget = heartbeat / 2;
    let mut tracked = false;
    let mut outage_logged = false;
    let mut ever_verified = false;
    let mut tick = tokio::time::interval(heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let lost = tokio::select! {
            r = events.errors.recv() => open(&r),
            r = events.reconnects.recv() => open(&r),
            r = events.changes.recv() => open(&r),
            _ = tick.tick() => {
                let started = Instant::now();
                let round = if tracked {
                    ping_all(&client, budget).await
                } else {
                    enable_all(&client, &prefixes, budget).await
                };
                // A connection event during the round: its answer may come from a connection
                // that is already gone, or one without tracking.
                match round {
                    Ok(()) if !events.pending() => {
                        if !tracked {
                            tracing::info!(prefixes = ?prefixes, "client tracking on every primary");
                        }
                        tracked = true;
                        ever_verified = true;
                        outage_logged = false;
                        emit(TrackingEvent::Verified { until: started + heartbeat * 2 });
                        Some(false)
                    }
                    Ok(()) => Some(true),
                    Err(e) => {
                        // Before the first connection this is start-up, not an outage.
                        if ever_verified && !outage_logged {
                            tracing::warn!(error = %e, "client tracking not verified; local copies unused until it is");
                            outage_logged = true;
                        } else {
                            tracing::debug!(error = %e, "client tracking not verified yet");
                        }
                        Some(true)
                    }
                }
            }
        };
        match lost {
            Some(true) => {
                tracked = false;
                emit(TrackingEvent::Down);
            }
            Some(false) => {}
            // quit(): fred closed its event channels.
            None => return,
        }
    }
}

/// `Some(true)`: a connection event; `None`: the channel closed.
fn open<T>(r: &Result<T, RecvError>) -> Option<bool> {
    match r {
        Err(RecvError::Closed) => None,
        _ => Some(true),
    }
}

fn primaries(client: &Client) -> Result<Vec<Server>, RedisError> {
    let nodes = client
        .cached_cluster_state()
        .map(|state| state.unique_primary_nodes())
        .unwrap_or_default();
    if nodes.is_empty() {
        return Err(RedisError::NotConnected);
    }
    Ok(nodes)
}

/// `CLIENT TRACKING OFF` then `ON BCAST PREFIX ...` on each primary's connection (ON twice
/// with the same prefixes is an error).
async fn enable_all(
    client: &Client,
    prefixes: &[String],
    budget: Duration,
) -> Result<(), RedisError> {
    let calls = primaries(client)?.into_iter().map(|node| {
        let node_client = client.with_cluster_node(node);
        let prefixes = prefixes.to_vec();
        async move {
            node_client
                .client_tracking::<(), _, _>(
                    "off",
                    None,
                    Vec::<String>::new(),
                    false,
                    false,
                    false,
                    false,
                )
                .await?;
            node_client
                .client_tracking::<(), _, _>("on", None, prefixes, true, false, false, false)
                .await
        }
    });
    all_within(budget, calls).await
}

async fn ping_all(client: &Client, budget: Duration) -> Result<(), RedisError> {
    let calls = primaries(client)?.into_iter().map(|node| {
        let node_client = client.with_cluster_node(node);
        async move { node_client.ping::<()>(None).await }
    });
    all_within(budget, calls).await
}

async fn all_within<F>(budget: Duration, calls: impl Iterator<Item = F>) -> Result<(), RedisError>
where
    F: std::future::Future<Output = Result<(), fred::error::Error>> + Send + 'static,
{
    let mut set = tokio::task::JoinSet::new();
    for call in calls {
        set.spawn(call);
    }
    let joined = async {
        while let Some(done) = set.join_next().await {
            match done {
                Ok(result) => result?,
                Err(e) => return Err(RedisError::Config(format!("client tracking task: {e}"))),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(budget, joined).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::Timeout(budget)),
    }
}
