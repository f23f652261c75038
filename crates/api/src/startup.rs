//! `Application::build`: the one place that wires clients, state, middleware and routes.
//! `main` and the tests both use it (tests bind port 0).

use crate::cache::ResponseCache;
use crate::error::{json_error_handler, path_error_handler, query_error_handler};
use crate::ratelimit::{Clock, Limiter};
use crate::redis_cluster::RedisCluster;
use crate::request_span::RequestSpan;
use crate::routes;
use crate::state::AppState;
use actix_web::dev::Server;
use actix_web::middleware::{from_fn, Condition};
use actix_web::{web, App, HttpServer};
use cacheserver_config::{Settings, StorageType};
use cacheserver_jobqueue::{JobQueue, Registry};
use metrics_exporter_prometheus::PrometheusHandle;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use tracing_actix_web::TracingLogger;

/// Largest accepted request body (JSON); larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("redis cluster client: {0}")]
    Redis(#[from] crate::redis_cluster::RedisError),
    #[error("rate limiter: {0}")]
    Limiter(String),
    #[error("response cache: {0}")]
    Cache(String),
    #[error("jobqueue: {0}")]
    Jobqueue(#[from] cacheserver_jobqueue::JobQueueError),
}

pub struct Application {
    addr: SocketAddr,
    server: Server,
    state: web::Data<AppState>,
}

impl Application {
    /// Build everything and bind the listener. Never waits for Redis: clients connect lazily.
    pub async fn build(
        settings: Settings,
        metrics: PrometheusHandle,
    ) -> Result<Self, StartupError> {
        let registry = Registry::production(&settings.jobqueue);
        Self::build_with_registry(settings, metrics, registry).await
    }

    /// [`Application::build`] accepting the job types of `registry` (tests add their own).
    pub async fn build_with_registry(
        settings: Settings,
        metrics: PrometheusHandle,
        registry: Registry,
    ) -> Result<Self, StartupError> {
        let redis = cluster_client(&settings)?;
        let limiter = Limiter::new(&settings.api.rate_limit, redis.clone(), Clock::system())
            .map_err(StartupError::Limiter)?;
        let cache = ResponseCache::new(
            &settings.api.cache,
            limiter.trusted_proxies().to_vec(),
            redis.clone(),
        )
        .map_err(StartupError::Cache)?;
        let jobs = JobQueue::with_registry(
            &settings.cache_server.redis.jobqueue,
            &settings.jobqueue,
            registry,
        )?;
        let bind = format!("{}:{}", settings.server.host, settings.server.port);
        let listener = TcpListener::bind(&bind).map_err(|source| StartupError::Bind {
            addr: bind.clone(),
            source,
        })?;
        let addr = listener.local_addr().map_err(|source| StartupError::Bind {
            addr: bind.clone(),
            source,
        })?;
        let event_streams = Arc::new(tokio::sync::Semaphore::new(
            usize::try_from(settings.api.max_event_streams).unwrap_or(usize::MAX),
        ));
        let state = web::Data::new(AppState {
            event_streams,
            settings: Arc::new(settings),
            redis,
            limiter: limiter.clone(),
            jobs,
            metrics,
            chaos: Default::default(),
        });
        let server = serve(
            listener,
            state.clone(),
            web::Data::new(limiter),
            web::Data::new(cache),
        )
        .map_err(|source| StartupError::Bind { addr: bind, source })?;
        Ok(Self {
            addr,
            server,
            state,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn state(&self) -> web::Data<AppState> {
        self.state.clone()
    }

    /// A handle to stop the server (tests).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

fn cluster_client(settings: &Settings) -> Result<Option<RedisCluster>, StartupError> {
    let cluster = &settings.cache_server.redis.default;
    let limiting_in_redis = settings.api.rate_limit.enabled
        && settings.api.rate_limit.storage_type != StorageType::Memory;
    let caching = settings.api.cache.enabled && !settings.api.cache.routes.is_empty();
    if !cluster.is_enabled() || !(limiting_in_redis || caching) {
        tracing::info!("rate limiting in memory, no response cache (no Redis cluster in use)");
        return Ok(None);
    }
    Ok(Some(RedisCluster::connect_lazy(cluster)?))
}

fn serve(
    listener: TcpListener,
    state: web::Data<AppState>,
    limiter: web::Data<Limiter>,
    cache: web::Data<ResponseCache>,
) -> std::io::Result<Server> {
    let cors = state.settings.api.cors.clone();
    let server = HttpServer::new(move || {
        App::new()
            // CORS around routing: preflights skip rate limits and tokens (crate::cors).
            .wrap(crate::cors::middleware(&cors))
            .wrap(Condition::new(
                cors.is_enabled(),
                from_fn(crate::cors::preflight_methods),
            ))
            // Innermost wrap runs last: metrics see the final status, tracing sees everything.
            .wrap(from_fn(crate::http_metrics::record))
            .wrap(TracingLogger::<RequestSpan>::new())
            .app_data(
                web::JsonConfig::default()
                    .limit(MAX_BODY_BYTES)
                    .error_handler(json_error_handler),
            )
            .app_data(web::PathConfig::default().error_handler(path_error_handler))
            .app_data(web::QueryConfig::default().error_handler(query_error_handler))
            .app_data(state.clone())
            .app_data(limiter.clone())
            .app_data(cache.clone())
            .configure(routes::configure)
    })
    .listen(listener)?
    .shutdown_timeout(10)
    .run();
    Ok(server)
}
