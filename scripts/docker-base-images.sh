#!/usr/bin/env bash
# Local stand-ins for the public base images, for machines that reach Debian's archive but no image
# registry (CI here). Built from Debian bookworm with mmdebstrap and `docker import`:
#
#   cacheserver-local/debian:bookworm-slim   stands in for debian:bookworm-slim (RUNTIME_IMAGE)
#   cacheserver-local/redis:7                 stands in for redis:7-alpine (REDIS_IMAGE): Debian's
#                                             redis-server 7.0 + redis-tools, WORKDIR /data
#   cacheserver-local/rust:<ver>-bookworm     stands in for rust:<ver>-bookworm (RUST_IMAGE): Debian's
#                                             gcc/libc6-dev plus THIS machine's Rust toolchain
#                                             (Debian's own rustc is too old for the workspace)
#
# The Dockerfile is the same either way; only the build args RUST_IMAGE / RUNTIME_IMAGE and the
# compose variable REDIS_IMAGE change. Prints those settings (eval-able) on stdout when done:
#   eval "$(scripts/docker-base-images.sh)"
# An image that exists already is kept (DOCKER_BASE_REBUILD=1 makes them again). ~25 s per image.
set -euo pipefail
source "$(dirname -- "${BASH_SOURCE[0]}")/lib/apt.sh"

log() { printf 'docker-base-images: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

SUITE=bookworm
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

docker info >/dev/null 2>&1 || die "no Docker engine answers (scripts/ensure-docker.sh starts one)"
if ! command -v mmdebstrap >/dev/null 2>&1; then
    apt_install docker-base-images -o DPkg::Lock::Timeout=600 -- mmdebstrap >&2 ||
        die "mmdebstrap is missing: apt-get install -y mmdebstrap"
fi

# The toolchain the workspace builds with here (rust-toolchain / rustup default).
rustc_bin="$(rustup which rustc 2>/dev/null || command -v rustc || true)"
[ -n "$rustc_bin" ] || die "no rustc on this machine: install Rust (rustup) first"
toolchain="$(cd -- "$(dirname -- "$rustc_bin")/.." && pwd -P)"
rust_version="$("$rustc_bin" --version | awk '{print $2}')"
[ -x "$toolchain/bin/cargo" ] || die "no cargo beside $rustc_bin"

RUNTIME_IMAGE=cacheserver-local/debian:bookworm-slim
REDIS_IMAGE=cacheserver-local/redis:7
RUST_IMAGE="cacheserver-local/rust:${rust_version}-bookworm"

# Leave out docs, man pages and locales, as Debian's slim images do.
SLIM=(--dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright'
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*'
    --aptopt='APT::Install-Recommends "false"')

# make NAME [mmdebstrap options...] -- [docker import --change options...]
make_image() {
    local name="$1"
    shift
    local mm=() changes=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do mm+=("$1"); shift; done
    [ "${1:-}" = "--" ] && shift
    changes=("$@")
    if [ "${DOCKER_BASE_REBUILD:-0}" != 1 ] && docker image inspect "$name" >/dev/null 2>&1; then
        log "$name exists"
        return 0
    fi
    log "making $name (mmdebstrap $SUITE)"
    local start=$SECONDS
    mmdebstrap --quiet --variant=apt "${SLIM[@]}" "${mm[@]}" "$SUITE" - "$MIRROR" |
        docker import "${changes[@]}" - "$name" >/dev/null ||
        die "could not make $name"
    log "$name made in $((SECONDS - start)) s ($(docker image inspect -f '{{.Size}}' "$name" | numfmt --to=si)B)"
}

make_image "$RUNTIME_IMAGE" -- --change 'CMD ["bash"]'

make_image "$REDIS_IMAGE" --include=redis-server,redis-tools \
    --customize-hook='mkdir -p "$1/data"' \
    -- --change 'WORKDIR /data' --change 'EXPOSE 6379' --change 'CMD ["redis-server"]'

# The toolchain goes where the official rust image keeps it (CARGO_HOME=/usr/local/cargo); the
# binaries are linked into /usr/local/cargo/bin, which is on PATH, as rustup's proxies are there.
# The machine's own CAs (/usr/local/share/ca-certificates, e.g. a TLS-inspecting proxy's) are
# trusted in the builder as they are on the host, so cargo reaches crates.io from the build.
local_cas=/usr/local/share/ca-certificates
make_image "$RUST_IMAGE" --include=ca-certificates,gcc,libc6-dev,make,pkg-config \
    --customize-hook="if ls '$local_cas'/*.crt >/dev/null 2>&1; then \
        cp '$local_cas'/*.crt \"\$1$local_cas/\" && chroot \"\$1\" update-ca-certificates >/dev/null; fi" \
    --customize-hook="mkdir -p \"\$1/usr/local/rust\" \"\$1/usr/local/cargo/bin\" && \
        cp -a '$toolchain'/bin '$toolchain'/lib '$toolchain'/libexec \"\$1/usr/local/rust/\" && \
        for b in \"\$1\"/usr/local/rust/bin/*; do ln -s \"/usr/local/rust/bin/\$(basename \"\$b\")\" \"\$1/usr/local/cargo/bin/\"; done" \
    -- --change 'ENV CARGO_HOME=/usr/local/cargo' \
    --change 'ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change "ENV RUST_VERSION=$rust_version" --change 'CMD ["bash"]'

printf 'RUST_IMAGE=%s\nRUNTIME_IMAGE=%s\nREDIS_IMAGE=%s\n' "$RUST_IMAGE" "$RUNTIME_IMAGE" "$REDIS_IMAGE"
