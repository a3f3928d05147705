# sidecar-on-create and cleanup-on-remove end to end: a real RabbitMQ (Debian's
# rabbitmq-server, its own node on loopback ports), the archive API stubs and FTP server of the
# tests as a process (archive-stubs), and the function binaries through their CLI with a
# directory as the store. Sourced by scripts/e2e.sh. Cold: about 25 s of apt for RabbitMQ and
# Erlang, 5 s to start the node; the checks take a few seconds.

need_apt rabbitmq-server
need_venv pika

mh_dir=$(mktemp -d)
on_exit "rm -rf '$mh_dir'"

# A port p with p + 20000 free too: RabbitMQ's Erlang distribution listens there.
mh_amqp_port=$(python3 -c '
import random, socket
def free(p):
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", p)); return True
    except OSError:
        return False
    finally:
        s.close()
while True:
    p = random.randrange(20000, 45000)
    if free(p) and free(p + 20000):
        print(p); break')
mh_node="bucketfn-e2e-$$@localhost"
# Its own folder: Debian's wrapper runs the node as the rabbitmq user.
mh_rabbit_dir=$(mktemp -d)
on_exit "rm -rf '$mh_rabbit_dir'"
chown rabbitmq: "$mh_rabbit_dir"
mh_rabbit_env=(
  RABBITMQ_NODENAME="$mh_node"
  RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  RABBITMQ_NODE_PORT="$mh_amqp_port"
  RABBITMQ_MNESIA_BASE="$mh_rabbit_dir/mnesia"
  RABBITMQ_LOG_BASE="$mh_rabbit_dir/log"
  RABBITMQ_ENABLED_PLUGINS_FILE="$mh_rabbit_dir/enabled_plugins"
  RABBITMQ_PID_FILE="$mh_rabbit_dir/pid"
)
mh_epmd_before=$(pgrep -x epmd || true)
log "starting RabbitMQ node $mh_node on 127.0.0.1:$mh_amqp_port"
env "${mh_rabbit_env[@]}" rabbitmq-server -detached
# With the pid file, `stop` returns only once the node's process has exited.
on_exit "rabbitmqctl -n '$mh_node' stop '$mh_rabbit_dir/pid'; [ -n '$mh_epmd_before' ] || epmd -kill"
mh_up=
for _ in $(seq 1 120); do
  if rabbitmqctl -n "$mh_node" await_startup >/dev/null 2>&1; then mh_up=1; break; fi
  sleep 0.5
done
[ -n "$mh_up" ] || { log "RabbitMQ did not start: $(tail -5 "$mh_rabbit_dir"/log/*.log 2>&1)"; false; }

mh_http_port=$(free_port)
mh_ftp_port=$(free_port)
mkdir -p "$mh_dir/ftp/VRT/DISK-SHARE-EVENTS" "$mh_dir/storage/mam-highresvideo"
"$BUCKETFN_BIN/archive-stubs" --http "127.0.0.1:$mh_http_port" --ftp-port "$mh_ftp_port" \
  --ftp-root "$mh_dir/ftp" --organisation OR-rf5kf25=VRT >"$mh_dir/stubs.log" 2>&1 &
mh_stubs_pid=$!
on_exit "kill $mh_stubs_pid"
wait_port "$mh_http_port"
wait_port "$mh_ftp_port"

mh_amqp_url="amqp://guest:guest@127.0.0.1:$mh_amqp_port/%2f"
mh_stubs="http://127.0.0.1:$mh_http_port"
mh_env=(
  MEDIAHAVEN_URL="$mh_stubs" MEDIAHAVEN_CLIENT_ID=bucketfn-client
  MEDIAHAVEN_CLIENT_SECRET=client-secret-value MEDIAHAVEN_USERNAME=archivist
  MEDIAHAVEN_PASSWORD=archivist-password MEDIAHAVEN_DELETE_DELAY_MS=10
  PID_SERVICE_URL="$mh_stubs/pid" ORGANISATIONS_API_URL="$mh_stubs/organisations"
  FTP_HOST="127.0.0.1:$mh_ftp_port" FTP_USER=tra FTP_PASSWORD=tra-password
  AMQP_URL="$mh_amqp_url" AMQP_EXCHANGE=filetransfer AMQP_ROUTING_KEY=filetransfer
  AMQP_QUEUE=filetransfer LOG_FORMAT=text
)

# The consumer side and the stubs' bookkeeping, in Python with pika.
cat >"$mh_dir/helper.py" <<'PY'
import json, sys, urllib.request
import pika

def channel(url):
    return pika.BlockingConnection(pika.URLParameters(url)).channel()

command, *args = sys.argv[1:]
if command == "take":
    method, props, body = channel(args[0]).basic_get("filetransfer", auto_ack=True)
    print("EMPTY" if method is None else json.dumps({
        "body": json.loads(body), "correlation_id": props.correlation_id,
        "delivery_mode": props.delivery_mode, "content_type": props.content_type}))
elif command == "seen":
    print(urllib.request.urlopen(args[0] + "/_stub/seen").read().decode())
elif command == "seed":
    request = urllib.request.Request(args[0] + "/_stub/records", data=sys.stdin.read().encode(),
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request)
PY

mh_key="191213-VAN statement+1.MXF"
printf 'essence' >"$mh_dir/storage/mam-highresvideo/$mh_key"

mh_invoke() {
  local function=$1 event=$2
  shift 2
  env "${mh_env[@]}" "$@" "$BUCKETFN_BIN/$function" invoke "$event" --storage "$mh_dir/storage" \
    >>"$mh_dir/invoke.log" 2>&1
}

mh_sidecar_path() { find "$mh_dir/ftp/VRT/DISK-SHARE-EVENTS" -name '*.xml' | head -1; }

mh_message_is_right() {
  local sidecar pid message
  sidecar=$(mh_sidecar_path)
  pid=$(basename "$sidecar" .xml)
  message=$(python "$mh_dir/helper.py" take "$mh_amqp_url")
  MESSAGE=$message PID=$pid python - <<'PY'
import json, os, sys
m = json.loads(os.environ["MESSAGE"])
pid = os.environ["PID"]
expected = {
    "source": {"domain": {"name": "s3.archive.example"}, "bucket": {"name": "mam-highresvideo"},
               "object": {"key": "191213-VAN statement+1.MXF"}},
    "destination": {"path": f"/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/{pid}.MXF",
                    "host": "127.0.0.1"},
}
ok = (len(pid) == 10 and m["body"] == expected and m["delivery_mode"] == 2
      and m["content_type"] == "application/json" and m["correlation_id"])
if not ok:
    print("unexpected message:", json.dumps(m), "pid", pid, file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}

mh_sidecar_is_right() {
  local sidecar pid
  sidecar=$(mh_sidecar_path)
  pid=$(basename "$sidecar" .xml)
  [ -n "$sidecar" ] &&
    grep -q "<PID>$pid</PID>" "$sidecar" &&
    grep -qF "<s3_object_key>$mh_key</s3_object_key>" "$sidecar" &&
    grep -q "<CP_id>OR-rf5kf25</CP_id>" "$sidecar" &&
    grep -q "<md5>77930bf06b236e089a22a255e6b28377</md5>" "$sidecar"
}

mh_duplicate_publishes_nothing() {
  mh_invoke sidecar-on-create events/gateway/created.json || return 1
  [ "$(python "$mh_dir/helper.py" take "$mh_amqp_url")" = EMPTY ] || return 1
  python "$mh_dir/helper.py" seen "$mh_stubs" |
    python -c 'import json, sys; sys.exit(0 if len(json.load(sys.stdin)["pids"]) == 1 else 1)' &&
    [ "$(find "$mh_dir/ftp" -name '*.xml' | wc -l)" -eq 1 ]
}

check "sidecar-on-create archives the gateway sample" \
  mh_invoke sidecar-on-create events/gateway/created.json
check "the sidecar is on the FTP server" mh_sidecar_is_right
check "the file-transfer request arrives on RabbitMQ, persistent, with a correlation id" \
  mh_message_is_right
check "a duplicate delivery mints, uploads and publishes nothing" mh_duplicate_publishes_nothing

# The remove flow: thumbnails of the key, and its records in MediaHaven.
mh_thumbs="$mh_dir/storage/mam-highresvideo/thumbnails/$mh_key"
mkdir -p "$mh_thumbs/x.jpg"
for name in 256.jpg 64.webp notes.txt x.jpg/256.jpg; do printf 't' >"$mh_thumbs/$name"; done
rm "$mh_dir/storage/mam-highresvideo/$mh_key"
python "$mh_dir/helper.py" seed "$mh_stubs" <<JSON
[{"fragment_id": "ESSENCE", "is_fragment": false,
  "fields": {"s3_object_key": "$mh_key", "s3_bucket": "mam-highresvideo"}},
 {"fragment_id": "FRAGMENT", "is_fragment": true,
  "fields": {"s3_object_key": "$mh_key", "s3_bucket": "mam-highresvideo",
             "dc_identifier_localid": "M1"}},
 {"fragment_id": "SUBS", "is_fragment": false, "fields": {"dc_identifier_localid": "M1"}}]
JSON

mh_removed_everything() {
  [ ! -e "$mh_thumbs/256.jpg" ] && [ ! -e "$mh_thumbs/64.webp" ] &&
    [ -e "$mh_thumbs/notes.txt" ] && [ -e "$mh_thumbs/x.jpg/256.jpg" ] &&
    python "$mh_dir/helper.py" seen "$mh_stubs" | python -c '
import json, sys
ids = [d[0] for d in json.load(sys.stdin)["deletes"]]
sys.exit(0 if ids == ["SUBS", "ESSENCE"] else 1)'
}

check "cleanup-on-remove runs on the gateway sample" \
  mh_invoke cleanup-on-remove events/gateway/removed.json CLEANUP_TARGETS=derivatives,mediahaven
check "thumbnails and the MediaHaven collateral and essence are gone, nothing else" \
  mh_removed_everything
