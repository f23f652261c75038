# Sourced by scripts/docker-stack.sh and scripts/docker-stack-test.sh; defines functions only.
#
# use_base_images: choose the base images for the Dockerfile's build args and the compose file's
# REDIS_IMAGE, and export them. DOCKER_BASE_IMAGES:
#   public  the Dockerfile's defaults (rust:1.95-bookworm, debian:bookworm-slim) and redis:7-alpine
#   local   local stand-ins made from Debian's archive by scripts/docker-base-images.sh
#   auto    (default) public when those images are here or a registry answers, else local
use_base_images() {
    local mode="${DOCKER_BASE_IMAGES:-auto}" dir
    dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)"
    case "$mode" in
        public | local) ;;
        auto)
            mode=local
            if docker image inspect debian:bookworm-slim redis:7-alpine >/dev/null 2>&1 &&
                docker image inspect "$(dockerfile_default RUST_IMAGE)" >/dev/null 2>&1; then
                mode=public
            elif timeout 20 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
                mode=public
            else
                echo "docker: no image registry answers: using local stand-ins (scripts/docker-base-images.sh)" >&2
            fi
            ;;
        *) echo "DOCKER_BASE_IMAGES must be auto, public or local (got '$mode')" >&2; return 1 ;;
    esac
    if [ "$mode" = local ]; then
        local settings
        settings="$("$dir/docker-base-images.sh")" || return 1
        eval "$settings"
        export RUST_IMAGE RUNTIME_IMAGE REDIS_IMAGE
    fi
    echo "docker: base images: ${RUST_IMAGE:-$(dockerfile_default RUST_IMAGE)}," \
        "${RUNTIME_IMAGE:-$(dockerfile_default RUNTIME_IMAGE)}, redis ${REDIS_IMAGE:-redis:7-alpine}" >&2
}

# The default of a build arg in the Dockerfile (ARG NAME=value).
dockerfile_default() {
    local dir
    dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
    sed -n "s/^ARG $1=//p" "$dir/Dockerfile" | head -n1
}

# compose_cmd: the command line of docker compose (v2 plugin) or docker-compose (1.29) with the
# stack file (one line, for a prefix such as REDIS_CLI).
compose_cmd() {
    local dir
    dir="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)"
    if docker compose version >/dev/null 2>&1; then
        echo "docker compose -f $dir/docker-compose.stack.yml"
    else
        echo "docker-compose -f $dir/docker-compose.stack.yml"
    fi
}

# compose ARGS...: that command with ARGS.
compose() {
    local cmd
    read -r -a cmd <<<"$(compose_cmd)"
    "${cmd[@]}" "$@"
}
