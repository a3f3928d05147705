# Declaring never contradicts a topology that exists: a RabbitMQ node with the file-transfer
# exchange and queue declared as meemoo's s3-events-handler declares them with pika (a durable
# queue, a direct exchange that is NOT durable, bound by the queue's name), and
# sidecar-on-create publishing into it with AMQP_QUEUE and AMQP_EXCHANGE set: passively (the
# default) and with AMQP_DECLARE=create and AMQP_EXCHANGE_DURABLE=false (the meemoo profile).
# A declaration that differs (a durable exchange) and a missing exchange are start-up errors
# that name the exchange and what differs, with nothing uploaded or published, and the
# exchange left as it was. Sourced by scripts/e2e.sh.
# Cold: rabbitmq-server from apt (about 25 s), pika from PyPI.

need_apt rabbitmq-server
need_venv pika

topo_dir=$(mktemp -d)
on_exit "rm -rf '$topo_dir'"

# --- RabbitMQ: its own node, ports and state.
start_loopback_rabbitmq topo topology

# --- The archive API stubs and the FTP server; objects in a local-directory store.
topo_api_port=$(free_port)
topo_ftp_port=$(free_port)
mkdir -p "$topo_dir/ftp/VRT/DISK-SHARE-EVENTS" "$topo_dir/storage/media-uploads/photos/2024"
"$BUCKETFN_BIN/archive-stubs" --http "127.0.0.1:$topo_api_port" --ftp-port "$topo_ftp_port" \
  --ftp-root "$topo_dir/ftp" --organisation OR-rf5kf25=VRT >"$topo_dir/stubs.log" 2>&1 &
on_exit "kill $!"
wait_port "$topo_api_port"
wait_port "$topo_ftp_port"
topo_api="http://127.0.0.1:$topo_api_port"

# An object and its created event per name: photos/2024/<name>.jpg in media-uploads.
topo_object() {
  cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$topo_dir/storage/media-uploads/photos/2024/$1.jpg"
  python3 - "$E2E_REPO/events/aws-s3/created.json" "photos/2024/$1.jpg" >"$topo_dir/$1.json" <<'PY'
import json, sys
event = json.load(open(sys.argv[1]))
event["Records"][0]["s3"]["object"]["key"] = sys.argv[2]
print(json.dumps(event))
PY
}

# topo_sidecar NAME VAR=VALUE...: sidecar-on-create invoked on NAME's event with the AMQP
# settings given; its output goes to $topo_dir/NAME.out.
topo_sidecar() {
  local name=$1
  shift
  topo_object "$name"
  env RUST_LOG=warn \
    MEDIAHAVEN_URL="$topo_api" MEDIAHAVEN_CLIENT_ID=bucketfn-client \
    MEDIAHAVEN_CLIENT_SECRET=client-secret-value MEDIAHAVEN_USERNAME=archivist \
    MEDIAHAVEN_PASSWORD=archivist-password PID_SERVICE_URL="$topo_api/pid" \
    ORGANISATIONS_API_URL="$topo_api/organisations" TENANT_BY_BUCKET=media-uploads=OR-rf5kf25 \
    S3_DOMAIN=s3.archive.example FTP_HOST="127.0.0.1:$topo_ftp_port" FTP_USER=tra \
    FTP_PASSWORD=tra-password AMQP_URL="$topo_amqp_url" AMQP_ROUTING_KEY=filetransfer \
    AMQP_TIMEOUT_SECS=5 "$@" \
    "$BUCKETFN_BIN/sidecar-on-create" invoke "$topo_dir/$name.json" \
    --storage "$topo_dir/storage" >"$topo_dir/$name.out" 2>&1
}

# The broker's side, with pika: the original's declarations, what a queue holds, an
# exchange's durability.
cat >"$topo_dir/broker.py" <<'PY'
import json, sys
import pika

url, command, *args = sys.argv[1:]
channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
if command == "original":
    # meemoo/events.py: queue_declare(durable=True), exchange_declare(exchange_type="direct")
    # with pika's defaults (durable=False), queue_bind(routing_key=queue).
    channel.queue_declare(queue="filetransfer", durable=True)
    channel.exchange_declare(exchange="filetransfer", exchange_type="direct")
    channel.queue_bind(exchange="filetransfer", queue="filetransfer", routing_key="filetransfer")
elif command == "take":
    # The keys of every message on the queue, one a line.
    while True:
        method, props, body = channel.basic_get("filetransfer", auto_ack=True)
        if method is None:
            break
        print(json.loads(body)["source"]["object"]["key"])
elif command == "non-durable":
    # Fails unless the exchange exists and is not durable: a passive declare finds it, and
    # a non-durable declare of a durable exchange would be refused (406).
    channel.exchange_declare(exchange="filetransfer", exchange_type="direct", passive=True)
    channel.exchange_declare(exchange="filetransfer", exchange_type="direct", durable=False)
PY
topo_broker() { python "$topo_dir/broker.py" "$topo_amqp_url" "$@"; }

topo_original_topology() { topo_broker original; }
check "the original's topology declared with pika (durable queue, non-durable direct exchange)" \
  topo_original_topology

# $1: the keys expected on the queue now, one a line.
topo_queued() {
  local got
  got=$(topo_broker take)
  [ "$got" = "$1" ] || { log "queued: [$got], expected [$1]"; return 1; }
}
topo_ftp_files() { find "$topo_dir/ftp" -type f -name '*.xml' | wc -l; }

topo_passive_publishes() {
  topo_sidecar passive AMQP_EXCHANGE=filetransfer AMQP_QUEUE=filetransfer ||
    { log "sidecar: $(cat "$topo_dir/passive.out")"; return 1; }
  topo_queued photos/2024/passive.jpg
}
check "passive (the default) publishes into the original's non-durable exchange" \
  topo_passive_publishes

topo_create_matching_publishes() {
  topo_sidecar create AMQP_EXCHANGE=filetransfer AMQP_QUEUE=filetransfer \
    AMQP_DECLARE=create AMQP_EXCHANGE_DURABLE=false ||
    { log "sidecar: $(cat "$topo_dir/create.out")"; return 1; }
  topo_queued photos/2024/create.jpg
}
check "AMQP_DECLARE=create with AMQP_EXCHANGE_DURABLE=false declares what exists, and publishes" \
  topo_create_matching_publishes

topo_mismatch_refused() {
  local out="$topo_dir/mismatch.out" before
  before=$(topo_ftp_files)
  if topo_sidecar mismatch AMQP_EXCHANGE=filetransfer AMQP_QUEUE=filetransfer AMQP_DECLARE=create; then
    log "started and archived with a durable declaration of a non-durable exchange: $(cat "$out")"
    return 1
  fi
  grep -q 'start-up failed' "$out" || { log "not a start-up error: $(cat "$out")"; return 1; }
  grep -q 'AMQP exchange "filetransfer"' "$out" || { log "exchange not named: $(cat "$out")"; return 1; }
  grep -q "inequivalent arg 'durable'" "$out" || { log "difference not named: $(cat "$out")"; return 1; }
  grep -q 'AMQP_EXCHANGE_DURABLE' "$out" || { log "the variable is not named: $(cat "$out")"; return 1; }
  log "refused: $(grep 'start-up failed' "$out")"
  [ "$(topo_ftp_files)" = "$before" ] || { log "a sidecar was uploaded"; return 1; }
  topo_queued "" && topo_broker non-durable
}
check "a durable declaration of the non-durable exchange is refused at start-up, naming it and durable; nothing uploaded, published or changed" \
  topo_mismatch_refused

topo_missing_refused() {
  local out="$topo_dir/missing.out"
  if topo_sidecar missing AMQP_EXCHANGE=nowhere AMQP_QUEUE=filetransfer; then
    log "started and archived with a missing exchange: $(cat "$out")"
    return 1
  fi
  grep -q 'start-up failed' "$out" &&
    grep -q 'AMQP exchange "nowhere": does not exist' "$out" &&
    grep -q 'AMQP_DECLARE=create' "$out" ||
    { log "no clear start-up error: $(cat "$out")"; return 1; }
  log "refused: $(grep 'start-up failed' "$out")"
  topo_queued ""
}
check "passive, a missing exchange is a start-up error naming it" topo_missing_refused
