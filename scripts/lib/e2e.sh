# Helpers for scripts/e2e.sh and its parts in scripts/e2e.d/: idempotent installs, ports,
# clean-up of what was started, and pass/fail counting. Sourced, not run.

E2E_CACHE=${BUCKETFN_CACHE:-$HOME/.cache/bucketfn}
E2E_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
mkdir -p "$E2E_CACHE"
export PATH="$E2E_CACHE/bin:$PATH"

e2e_passed=0
e2e_failed=0
e2e_cleanups=()

log() { printf '[e2e] %s\n' "$*" >&2; }

# Runs the registered clean-ups, newest first; installed on EXIT by e2e.sh.
e2e_cleanup() {
  local i
  for ((i = ${#e2e_cleanups[@]} - 1; i >= 0; i--)); do
    eval "${e2e_cleanups[i]}" >/dev/null 2>&1 || true
  done
  e2e_cleanups=()
}

# on_exit 'command': run it when the script ends, whatever happens.
on_exit() { e2e_cleanups+=("$1"); }

apt_updated=
# need_apt PACKAGE...: installs the Debian packages that are missing.
need_apt() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ -z "$apt_updated" ]; then
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  log "installing ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# need_cargo_bin BINARY CRATE VERSION [cargo install flags...]: installs a crates.io binary
# into the cache (outside the repo) unless it is already there.
need_cargo_bin() {
  local binary=$1 crate=$2 version=$3
  shift 3
  if [ -x "$E2E_CACHE/bin/$binary" ]; then return 0; fi
  log "cargo install $crate@$version $* (once; cached in $E2E_CACHE)"
  cargo install --locked --quiet --root "$E2E_CACHE" "$crate@$version" "$@"
}

# need_venv_in NAME PACKAGE...: a Python venv .cache/NAME in the repo (ignored) with these
# packages, for tools that must not share one; its python is $E2E_REPO/.cache/NAME/bin/python.
need_venv_in() {
  local venv="$E2E_REPO/.cache/$1"
  shift
  [ -x "$venv/bin/python" ] || python3 -m venv "$venv"
  local missing=()
  for pkg in "$@"; do
    "$venv/bin/pip" show "${pkg%%[=<>]*}" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    log "pip install ${missing[*]}"
    "$venv/bin/pip" install --quiet "${missing[@]}"
  fi
}

# need_venv PACKAGE...: the repo's shared venv (.cache/venv) with these packages, first on PATH.
need_venv() {
  need_venv_in venv "$@"
  export PATH="$E2E_REPO/.cache/venv/bin:$PATH"
}

# free_port: an unused loopback port.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# steady_port: an unused loopback port below the ephemeral range, for a server that (re)starts
# on its port while clients keep reconnecting: a reconnect to an ephemeral port with nothing
# listening can connect to itself (TCP simultaneous open) and hold the port.
steady_port() {
  python3 -c '
import random, socket
low = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
while True:
    port = random.randrange(10000, low)
    try:
        socket.socket().bind(("127.0.0.1", port))
    except OSError:
        continue
    print(port)
    break'
}

# wait_port PORT [SECONDS]: waits until something listens on 127.0.0.1:PORT.
wait_port() {
  local port=$1 deadline=$((SECONDS + ${2:-30}))
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "nothing listens on port $port"
      return 1
    fi
    sleep 0.2
  done
}

# start_rabbitmq NODE DIR VAR=VALUE...: starts a RabbitMQ node of its own (Debian's
# rabbitmq-server, run as the rabbitmq user, which must own DIR) with its state in DIR and the
# given RABBITMQ_* settings, waits until it is up, and stops it (and an epmd it started) at the
# end.
start_rabbitmq() {
  local node=$1 dir=$2 epmd_before up=
  shift 2
  local settings=(
    RABBITMQ_NODENAME="$node"
    RABBITMQ_MNESIA_BASE="$dir/mnesia"
    RABBITMQ_LOG_BASE="$dir/log"
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
    RABBITMQ_PID_FILE="$dir/pid"
    "$@"
  )
  epmd_before=$(pgrep -x epmd || true)
  env "${settings[@]}" rabbitmq-server -detached
  # With the pid file, `stop` returns only once the node's process has exited.
  on_exit "rabbitmqctl -n '$node' stop '$dir/pid'; [ -n '$epmd_before' ] || epmd -kill"
  for _ in $(seq 1 120); do
    if rabbitmqctl -n "$node" await_startup >/dev/null 2>&1; then up=1; break; fi
    sleep 0.5
  done
  [ -n "$up" ] || { log "RabbitMQ did not start: $(tail -5 "$dir"/log/*.log 2>&1)"; return 1; }
}

# start_loopback_rabbitmq PREFIX NAME: a RabbitMQ node of the part's own on loopback ports,
# with its own state folder (Debian's wrapper runs the node as the rabbitmq user), stopped on
# exit; sets PREFIX_node, PREFIX_amqp_port and PREFIX_amqp_url (guest, vhost /).
start_loopback_rabbitmq() {
  local prefix=$1 node="bucketfn-e2e-$2-$$@localhost" amqp_port dist_port dir
  amqp_port=$(free_port)
  dist_port=$(free_port)
  dir=$(mktemp -d)
  on_exit "rm -rf '$dir'"
  chown rabbitmq: "$dir"
  log "starting RabbitMQ node $node on 127.0.0.1:$amqp_port"
  start_rabbitmq "$node" "$dir" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_DIST_PORT="$dist_port" || return 1
  wait_port "$amqp_port" 30
  printf -v "${prefix}_node" '%s' "$node"
  printf -v "${prefix}_amqp_port" '%s' "$amqp_port"
  printf -v "${prefix}_amqp_url" '%s' "amqp://guest:guest@127.0.0.1:$amqp_port/%2f"
}

# start_tansu PORT LOG: a Kafka-compatible broker (tansu, in-memory storage, so every start is
# empty) on 127.0.0.1:PORT, logging to LOG; sets tansu_pid. Needs `need_cargo_bin tansu`.
start_tansu() {
  tansu broker --listener-url "tcp://127.0.0.1:$1" --advertised-listener-url "tcp://127.0.0.1:$1" \
    --storage-engine memory://tansu/ >>"$2" 2>&1 &
  tansu_pid=$!
  wait_port "$1" 30
}

# kafka_tool BROKERS COMMAND ARGS...: scripts/lib/kafka_tool.py (kafka-python, from need_venv).
kafka_tool() { python "$E2E_REPO/scripts/lib/kafka_tool.py" "$@"; }

# e2e_tool COMMAND ARGS...: scripts/lib/e2e_tool.py, the parts' small programs (run by the
# venv's python, for the one that needs pika).
e2e_tool() { python "$E2E_REPO/scripts/lib/e2e_tool.py" "$@"; }

# workspace_functions: the workspace's functions (functions/*/, each a binary of its name),
# one a line, so that the parts need not list them.
workspace_functions() {
  local manifest
  for manifest in "$E2E_REPO"/functions/*/Cargo.toml; do
    manifest=${manifest%/Cargo.toml}
    printf '%s\n' "${manifest##*/}"
  done
}

# wait_log LOG TEXT [SECONDS]: waits until LOG holds TEXT.
wait_log() {
  local deadline=$((SECONDS + ${3:-30}))
  until grep -qsF -- "$2" "$1"; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "$1 never said: $2 (last lines: $(tail -3 "$1" 2>&1))"
      return 1
    fi
    sleep 0.3
  done
}

# check NAME COMMAND...: runs one end-to-end check and counts it.
check() {
  local name=$1
  shift
  if "$@"; then
    e2e_passed=$((e2e_passed + 1))
    log "ok: $name"
  else
    e2e_failed=$((e2e_failed + 1))
    log "FAILED: $name"
  fi
}

# The moto server's version (PyPI `moto[server]`), the second S3 implementation beside s3s-fs.
E2E_MOTO_VERSION=5.2.5

# start_moto LOG: starts moto's S3 server (installed into the repo's venv once) on a free
# loopback port, logging to LOG; sets moto_url and stops the server at the end. moto accepts
# any credentials and keeps everything in memory.
start_moto() {
  local logfile=$1 port
  need_venv
  # need_venv asks pip by package name, which `moto[server]` is not: ask moto itself.
  python -c "import moto, moto.server; assert moto.__version__ == '$E2E_MOTO_VERSION'" 2>/dev/null ||
    need_venv "moto[server]==$E2E_MOTO_VERSION"
  port=$(free_port)
  moto_server -H 127.0.0.1 -p "$port" >"$logfile" 2>&1 &
  on_exit "kill $!"
  wait_port "$port" 60 || { log "moto did not start: $(tail -5 "$logfile")"; return 1; }
  moto_url="http://127.0.0.1:$port"
}
