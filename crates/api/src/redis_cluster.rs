//! The api's Redis Cluster pool (fred) is built by the Redis layer, `cacheserver_redis::cluster`;
//! this module names it for the api's own modules (limiter, cache, chaos, health).

pub use cacheserver_redis::cluster::{ClusterScript, ConnectionStats, RedisCluster};
pub use cacheserver_redis::RedisError;
