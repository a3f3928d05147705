#!/usr/bin/env bash
# Start-up time of a function binary (release build): process start to ready for the first
# event, under the Lambda runtime (first GET of the Runtime API's /invocation/next) and as an
# HTTP service (port accepting connections), with region and credentials from the environment.
# Printed beside the same measurement of a process that does nothing (/bin/true to exit), as a
# reference for what spawning costs on this machine. A benchmark, not a test: it asserts nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

function_name=${1:-thumbnail-on-create}
runs=${RUNS:-30}
cargo build --release -p "$function_name" --quiet
binary="target/release/$function_name"

python3 - "$binary" "$runs" <<'PY'
import http.server, os, socket, statistics, subprocess, sys, threading, time

binary, runs = sys.argv[1], int(sys.argv[2])
base_env = {
    "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    "AWS_REGION": "eu-west-1",
    "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
    "AWS_SECRET_ACCESS_KEY": "secret",
    "RUST_LOG": "warn",
    "SOURCE_BUCKETS": "*",
}

first_poll = {}

class RuntimeApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        first_poll.setdefault("t", time.perf_counter())
        # Hold the poll open; the process is killed once it has been seen.
        time.sleep(2)
    def log_message(self, *args):
        pass

server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), RuntimeApi)
threading.Thread(target=server.serve_forever, daemon=True).start()
api = "127.0.0.1:%d" % server.server_address[1]

def lambda_startup():
    first_poll.clear()
    env = dict(base_env, AWS_LAMBDA_RUNTIME_API=api, AWS_LAMBDA_FUNCTION_NAME="bench",
               AWS_LAMBDA_FUNCTION_MEMORY_SIZE="128", AWS_LAMBDA_FUNCTION_VERSION="1")
    start = time.perf_counter()
    proc = subprocess.Popen([binary], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while "t" not in first_poll:
        if proc.poll() is not None:
            sys.exit("the function exited before polling for an event")
        time.sleep(0.0002)
    proc.kill(); proc.wait()
    return first_poll["t"] - start

def http_startup():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    env = dict(base_env, PORT=str(port), EVENT_AUTH="none")
    start = time.perf_counter()
    proc = subprocess.Popen([binary, "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.05).close()
            break
        except OSError:
            if proc.poll() is not None:
                sys.exit("the function exited before listening")
            time.sleep(0.0002)
    elapsed = time.perf_counter() - start
    proc.kill(); proc.wait()
    return elapsed

def spawn_only():
    start = time.perf_counter()
    subprocess.run(["/bin/true"])
    return time.perf_counter() - start

def report(name, fn):
    samples = sorted(fn() for _ in range(runs))
    print("%-28s median %6.2f ms   p90 %6.2f ms   (%d runs)" % (
        name, statistics.median(samples) * 1000, samples[int(runs * 0.9) - 1] * 1000, runs))
    return statistics.median(samples)

reference = report("reference: spawn /bin/true", spawn_only)
lam = report("lambda: start to first poll", lambda_startup)
web = report("http: start to listening", http_startup)
print("ratio to the spawn reference: lambda %.1fx, http %.1fx" % (lam / reference, web / reference))
server.shutdown()
PY
