# Images for the two binaries, one file, a target each:
#   docker build --target api    -t cacheserver-api .
#   docker build --target worker -t cacheserver-worker .
# Both targets share one builder stage: a single `cargo build --bin api --bin worker`.
#
# Base images are build args with the usual public defaults. Where no registry is reachable (CI
# here), scripts/docker-base-images.sh makes local stand-ins and only these args change:
#   --build-arg RUST_IMAGE=cacheserver-local/rust:1.95.0-bookworm
#   --build-arg RUNTIME_IMAGE=cacheserver-local/debian:bookworm-slim
# The builder and the runtime are both Debian bookworm (the binaries link glibc 2.36).
#
# Dependency caching: cargo-chef (works with the classic builder and BuildKit alike, docker-compose
# 1.29 included): the dependencies are one layer, rebuilt only when Cargo.toml/Cargo.lock change.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src
# No debug info in the images (the workspace's release profile keeps line tables for profiling):
# smaller binaries and a faster link.
ENV CARGO_TERM_COLOR=never \
    CARGO_PROFILE_RELEASE_DEBUG=0

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin api --bin worker
COPY . .
RUN cargo build --release --locked --bin api --bin worker \
    && install -m 0755 target/release/api target/release/worker /usr/local/bin/

# Shared by both targets: CA certificates (TLS to Redis, the webhook job), curl for HEALTHCHECK,
# a non-root user, the config/ tree baked in (mount your own over /app/config to override it).
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && apt-get clean && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin cacheserver
WORKDIR /app
COPY config/ /app/config/
# Settings: APP_ENV picks config/<env>/, and any APP__SECTION__KEY variable overrides a key.
ENV APP_ENV=production \
    APP_CONFIG_DIR=/app/config
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.source="https://github.com/cacheserver/cacheserver" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.vendor="cacheserver"
USER 10001:10001

FROM runtime AS worker
LABEL org.opencontainers.image.title="cacheserver-worker" \
      org.opencontainers.image.description="cacheserver jobqueue worker (apalis on the jobqueue Redis); /health and /metrics on 8082"
COPY --from=builder /usr/local/bin/worker /usr/local/bin/worker
# Reachable from outside the container; the name defaults to <hostname>-<pid>, and a container's
# hostname is its id, so `--scale worker=3` gives three distinct names.
ENV APP__JOBQUEUE__WORKER__HEALTH_HOST=0.0.0.0
EXPOSE 8082
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${APP__JOBQUEUE__WORKER__HEALTH_PORT:-8082}/health" || exit 1
# Exec form: the worker is PID 1 and gets SIGTERM itself; it stops fetching, lets in-flight jobs
# finish within jobqueue.worker.shutdown_grace (30 s) and exits 0. Give `docker stop` more than
# that: docker stop -t 40 (compose: stop_grace_period).
ENTRYPOINT ["/usr/local/bin/worker"]

FROM runtime AS api
LABEL org.opencontainers.image.title="cacheserver-api" \
      org.opencontainers.image.description="cacheserver api: rate limiting on a Redis Cluster, the jobs API, health, metrics, OpenAPI"
COPY --from=builder /usr/local/bin/api /usr/local/bin/api
ENV APP__SERVER__HOST=0.0.0.0
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD curl -fsS -o /dev/null "http://127.0.0.1:${APP__SERVER__PORT:-8080}/health" || exit 1
ENTRYPOINT ["/usr/local/bin/api"]
