//! Single-flight within one api instance: concurrent requests for one key wait for the first
//! (the leader) instead of each asking Redis or the handler. Bounded: beyond `capacity` keys in
//! flight, requests go their own way. A leader that is dropped (client gone) releases its
//! followers, who then answer on their own. This instance's own writes end the flights of the
//! routes they invalidate ([`Flights::invalidate`]): a leader's lookup may predate the write, and
//! a read that begins after the write answered must not get that older answer.

use super::entry::Entry;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// What a leader hands its followers: the entry it served and whether it was stale, or nothing
/// usable (the handler's answer was not cacheable).
#[derive(Clone)]
pub(crate) enum Outcome {
    Entry {
        entry: Arc<Entry>,
        /// How long it stays fresh (zero when stale).
        fresh_for: std::time::Duration,
        stale: bool,
    },
    Nothing,
}

type Slot = watch::Receiver<Option<Outcome>>;

/// A key's flight: its followers' slot and the id of its leader.
struct Flight {
    slot: Slot,
    leader: u64,
}

#[derive(Default)]
struct Map {
    flights: HashMap<String, Flight>,
    next_leader: u64,
}

#[derive(Clone)]
pub(crate) struct Flights {
    map: Arc<Mutex<Map>>,
    capacity: usize,
}

pub(crate) enum Join {
    Leader(Leader),
    Follower(Slot),
    /// Too many keys in flight: not coalesced.
    Full,
}

impl Flights {
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Arc::default(),
            capacity,
        }
    }

    pub fn join(&self, key: &str) -> Join {
        let Ok(mut map) = self.map.lock() else {
            return Join::Full;
        };
        if let Some(flight) = map.flights.get(key) {
            return Join::Follower(flight.slot.clone());
        }
        if map.flights.len() >= self.capacity {
            return Join::Full;
        }
        let (tx, slot) = watch::channel(None);
        map.next_leader += 1;
        let id = map.next_leader;
        map.flights
            .insert(key.to_owned(), Flight { slot, leader: id });
        Join::Leader(Leader {
            flights: self.clone(),
            key: key.to_owned(),
            id,
            tx,
        })
    }

    /// After this instance's write changed data (its invalidation is in Redis): requests for
    /// keys starting with one of `prefixes` (the entry keys of the routes it invalidated) lead
    /// flights of their own from now on. Leaders in flight still answer the followers they have.
    pub fn invalidate(&self, prefixes: &[String]) {
        if let Ok(mut map) = self.map.lock() {
            map.flights
                .retain(|key, _| !prefixes.iter().any(|p| key.starts_with(p.as_str())));
        }
    }

    /// Keys in flight (tests and metrics).
    pub fn len(&self) -> usize {
        self.map.lock().map(|m| m.flights.len()).unwrap_or(0)
    }
}

pub(crate) struct Leader {
    flights: Flights,
    key: String,
    id: u64,
    tx: watch::Sender<Option<Outcome>>,
}

impl Leader {
    pub fn publish(self, outcome: Outcome) {
        self.tx.send_replace(Some(outcome));
        // Drop removes the key.
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Ok(mut map) = self.flights.map.lock() {
            // Not a later leader's flight of the same key (after `invalidate`).
            if map
                .flights
                .get(&self.key)
                .is_some_and(|f| f.leader == self.id)
            {
                map.flights.remove(&self.key);
            }
        }
    }
}

/// Wait for the leader's outcome; `None` when it went away or `bound` passed.
pub(crate) async fn follow(mut slot: Slot, bound: std::time::Duration) -> Option<Outcome> {
    match tokio::time::timeout(bound, slot.wait_for(Option::is_some)).await {
        Ok(Ok(outcome)) => outcome.clone(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn followers_get_the_leaders_outcome_and_the_map_is_bounded() {
        let flights = Flights::new(1);
        let Join::Leader(leader) = flights.join("a") else {
            panic!("first is the leader")
        };
        let Join::Follower(slot) = flights.join("a") else {
            panic!("second follows")
        };
        assert!(matches!(flights.join("b"), Join::Full));
        let waiter = tokio::spawn(follow(slot, Duration::from_secs(5)));
        leader.publish(Outcome::Nothing);
        assert!(matches!(waiter.await.unwrap(), Some(Outcome::Nothing)));
        assert_eq!(flights.len(), 0);
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_followers() {
        let flights = Flights::new(10);
        let Join::Leader(leader) = flights.join("a") else {
            panic!()
        };
        let Join::Follower(slot) = flights.join("a") else {
            panic!()
        };
        drop(leader);
        assert!(follow(slot, Duration::from_secs(5)).await.is_none());
    }

    #[tokio::test]
    async fn after_an_invalidation_a_request_leads_anew_and_the_old_leader_keeps_its_followers() {
        let flights = Flights::new(10);
        let Join::Leader(old) = flights.join("r1:a") else {
            panic!()
        };
        let Join::Follower(before) = flights.join("r1:a") else {
            panic!()
        };
        let Join::Leader(other) = flights.join("r2:a") else {
            panic!()
        };
        flights.invalidate(&["r1:".to_owned()]);
        let Join::Leader(new) = flights.join("r1:a") else {
            panic!("a request after the write must not get the older lookup's answer")
        };
        assert!(
            matches!(flights.join("r2:a"), Join::Follower(_)),
            "a route the write did not invalidate keeps its flight"
        );
        let waiter = tokio::spawn(follow(before, Duration::from_secs(5)));
        old.publish(Outcome::Nothing);
        assert!(matches!(waiter.await.unwrap(), Some(Outcome::Nothing)));
        // The old leader is gone; the new flight is still joinable.
        assert!(matches!(flights.join("r1:a"), Join::Follower(_)));
        drop((new, other));
        assert_eq!(flights.len(), 0);
    }
}
