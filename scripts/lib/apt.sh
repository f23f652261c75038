# Shared by the scripts/ensure-*.sh scripts (source it; it defines a function, runs nothing).
#
# apt_install TAG [apt-get install options...] -- PACKAGE...
#   Install Debian/Ubuntu packages with apt-get (through sudo when not root). TAG prefixes the
#   messages. Fails with a hint when apt-get, or root and sudo, are missing.
apt_install() {
    local tag=$1
    shift
    local options=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        options+=("$1")
        shift
    done
    [ "${1:-}" = "--" ] && shift
    local packages=("$@")

    echo "$tag: installing ${packages[*]} with apt-get" >&2
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$tag: apt-get is not available; install ${packages[*]} yourself" >&2
        return 1
    fi
    local sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo_cmd=(sudo)
        else
            echo "$tag: not root and sudo is not available; run as root: apt-get install -y ${packages[*]}" >&2
            return 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get update
    ${sudo_cmd[@]+"${sudo_cmd[@]}"} apt-get install -y ${options[@]+"${options[@]}"} "${packages[@]}"
}
