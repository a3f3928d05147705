# The archive flow of meemoo's s3-events-handler, as a drop-in: sidecar-on-create and
# cleanup-on-remove run `consume` with the meemoo profile (deploy/meemoo/*.env.example, read as
# Docker's --env-file reads them; only addresses, secrets and the retry wait changed) against a
# RabbitMQ node with the original's topology, declared with pika as the original declares it
# (durable queues, direct exchanges that are NOT durable, bound by the queue's name) and a
# dead-letter exchange on the events queues (a policy, as an operator adds one: a queue
# argument would make the original's own declaration fail). The gateway's samples
# (events/viaa/) go to the events exchange as the gateway publishes them, with correlation ids;
# the objects are in a directory store, the archive APIs and the transport server are
# archive-stubs'. Checked: the sidecars on FTP and the file-transfer requests are the
# original's for an essence, a key with `+`, and the first and second collateral of one media
# id; each request carries the incoming message's correlation id; a removal takes the essence's
# records and its collaterals from MediaHaven and nothing else; a body that is no event and an
# unknown tenant are dead-lettered as sent; an ObjectRestore is acknowledged; the PID service
# answering 503 twice, and the transport server down at first, are retried and archive once; a
# broker restart in a burst loses nothing and acknowledges nothing early, with nobody but
# bucketfn to declare the topology again: the original's exchanges are not durable, so a
# restarted node no longer has them, and the profile's CONSUME_DECLARE=create and
# AMQP_DECLARE=create declare them again on every connection, as the original does.
# Sourced by scripts/e2e.sh. Cold: rabbitmq-server from apt (about 25 s), pika from PyPI.

need_apt rabbitmq-server
need_venv pika

arc_dir=$(mktemp -d)
on_exit "rm -rf '$arc_dir'"

# --- RabbitMQ: its own node, ports and state.
start_loopback_rabbitmq arc archive

# The broker's side, with pika: the original's declarations (meemoo/events.py), the gateway's
# publishing, what a queue holds.
cat >"$arc_dir/broker.py" <<'PY'
import json, sys
import pika

url, command, *args = sys.argv[1:]
channel = pika.BlockingConnection(pika.URLParameters(url)).channel()

def original(queue, exchange):
    # Events(...)._declare_queue(): queue_declare(durable=True), exchange_declare(direct) with
    # pika's default durable=False, queue_bind(routing_key=queue).
    channel.queue_declare(queue=queue, durable=True)
    channel.exchange_declare(exchange=exchange, exchange_type="direct")
    channel.queue_bind(exchange=exchange, queue=queue, routing_key=queue)

if command == "original":
    # As the original declares on every start, incoming and outgoing.
    original("s3-events", "s3-events-exchange")
    original("filetransfer", "filetransfer-exchange")
elif command == "operator":
    # What the operator adds: the dead-letter exchange and its queue, and cleanup-on-remove's
    # own queue (deploy/meemoo/cleanup-on-remove.env.example: created once, durable).
    channel.exchange_declare("s3-events.dlx", exchange_type="fanout", durable=True)
    channel.queue_declare("s3-events.dead", durable=True)
    channel.queue_bind("s3-events.dead", "s3-events.dlx")
    channel.queue_declare("s3-events-removed", durable=True)
elif command == "argument-refused":
    # Why a policy: on a queue given its DLX as an argument, the original's declaration (no
    # arguments) is refused, and the original could not start.
    channel.queue_declare("dlx-by-argument", durable=True,
                          arguments={"x-dead-letter-exchange": "s3-events.dlx"})
    try:
        channel.queue_declare("dlx-by-argument", durable=True)
    except pika.exceptions.ChannelClosedByBroker as e:
        assert e.reply_code == 406 and "x-dead-letter-exchange" in e.reply_text, e
        channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
        channel.queue_delete("dlx-by-argument")
    else:
        sys.exit("the original's declaration of a queue with a DLX argument was accepted")
elif command == "publish":
    # publish FILE CORRELATION_ID...: as the gateway publishes, to the events exchange by the
    # queue's name, persistent, confirmed.
    channel.confirm_delivery()
    for path, correlation_id in zip(args[::2], args[1::2]):
        channel.basic_publish("s3-events-exchange", "s3-events", open(path, "rb").read(),
                              pika.BasicProperties(delivery_mode=2, correlation_id=correlation_id))
elif command == "take":
    # Every message of queue args[0], as JSON lines.
    while True:
        method, props, body = channel.basic_get(args[0], auto_ack=True)
        if method is None:
            break
        deaths = [(d.get("queue"), d.get("reason")) for d in (props.headers or {}).get("x-death", [])]
        print(json.dumps({"body": body.decode("utf-8", "replace"), "deaths": deaths,
                          "correlation_id": props.correlation_id,
                          "delivery_mode": props.delivery_mode}))
PY
arc_broker() { python "$arc_dir/broker.py" "$arc_amqp_url" "$@"; }

# arc_counts QUEUE: "ready unacked" of QUEUE.
arc_counts() {
  rabbitmqctl -n "$arc_node" -q list_queues name messages_ready messages_unacknowledged |
    awk -v q="$1" '$1 == q { print $2, $3 }'
}
# arc_wait_counts QUEUE "READY UNACKED" [SECONDS]: waits until QUEUE holds that.
arc_wait_counts() {
  local deadline=$((SECONDS + ${3:-30})) now
  while now=$(arc_counts "$1"); [ "$now" != "$2" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "queue $1 holds $now (ready unacked), expected $2"
      return 1
    fi
    sleep 0.3
  done
}
# arc_settled: every queue of the consumers is empty, nothing unacknowledged.
arc_settled() {
  local queue
  for queue in s3-events s3-events-removed s3-events.retry s3-events-removed.retry; do
    arc_wait_counts "$queue" "0 0" "${1:-30}" || return 1
  done
}

arc_topology() {
  arc_broker original && arc_broker operator || return 1
  # The dead-letter exchange as a policy: the queues keep the original's declaration.
  rabbitmqctl -n "$arc_node" -q set_policy --apply-to queues s3-events-dlx \
    '^s3-events(-removed)?$' '{"dead-letter-exchange": "s3-events.dlx"}' >/dev/null || return 1
  # The original, started again, declares the same and is not refused.
  arc_broker original && arc_broker argument-refused
}
check "archive: the original's topology with pika, a DLX by policy, and the original's redeclaration accepted" \
  arc_topology

# --- The archive APIs and the transport server; the store is a directory.
arc_api_port=$(free_port)
arc_ftp_port=$(free_port)
mkdir -p "$arc_dir/ftp/VRT/DISK-SHARE-EVENTS"
# The buckets SOURCE_BUCKETS names and the profile's CLAIM_BUCKET: each checked at start-up.
for bucket in MAM_HighresVideo mam-collaterals mam-unknown bucketfn-claims; do
  mkdir -p "$arc_dir/store/$bucket"
done
"$BUCKETFN_BIN/archive-stubs" --http "127.0.0.1:$arc_api_port" --ftp-port "$arc_ftp_port" \
  --ftp-root "$arc_dir/ftp" --organisation OR-rf5kf25=VRT >"$arc_dir/stubs.log" 2>&1 &
on_exit "kill $!"
wait_port "$arc_api_port"
wait_port "$arc_ftp_port"
arc_api="http://127.0.0.1:$arc_api_port"
arc_sidecars="$arc_dir/ftp/VRT/DISK-SHARE-EVENTS"

# The transport server as the functions reach it: a TCP relay to the FTP server's control port
# that refuses connections while $arc_dir/ftp-down exists (passive data connections go to the
# server itself). File-transfer requests name the relay, as FTP_HOST does.
arc_relay_port=$(free_port)
python3 - "$arc_relay_port" "$arc_ftp_port" "$arc_dir/ftp-down" <<'PY' >"$arc_dir/relay.log" 2>&1 &
import asyncio, os, sys
listen, target, down = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def serve(client_reader, client_writer):
    if os.path.exists(down):
        client_writer.close()
        return
    server_reader, server_writer = await asyncio.open_connection("127.0.0.1", target)
    await asyncio.gather(pipe(client_reader, server_writer), pipe(server_reader, client_writer),
                         return_exceptions=True)
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", listen)
    await server.serve_forever()
asyncio.run(main())
PY
on_exit "kill $!"
wait_port "$arc_relay_port"

# arc_object BUCKET KEY MD5: an object in the store, with its md5 in its metadata as the
# gateway keeps it.
arc_object() {
  python3 - "$arc_dir/store" "$1" "$2" "$3" <<'PY'
import json, os, sys
root, bucket, key, md5 = sys.argv[1:]
for path, text in ((os.path.join(root, bucket, key), "content of " + key),
                   (os.path.join(root, ".bucketfn", "meta", bucket, key),
                    json.dumps({"content_type": "application/mxf", "metadata": {"md5sum": md5}}))):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(text)
PY
}
# arc_event NAME SAMPLE [KEY [BUCKET]]: events/viaa/SAMPLE, its key and bucket replaced when
# given, in $arc_dir/NAME.json.
arc_event() {
  python3 - "$E2E_REPO/events/viaa/$2" "${3:-}" "${4:-}" >"$arc_dir/$1.json" <<'PY'
import json, sys
event = json.load(open(sys.argv[1]))
s3 = event["Records"][0]["s3"]
if sys.argv[2]:
    s3["object"]["key"] = sys.argv[2]
if sys.argv[3]:
    s3["bucket"]["name"] = sys.argv[3]
print(json.dumps(event))
PY
}
# arc_send NAME...: publishes each $arc_dir/NAME.json with correlation id corr-NAME.
arc_send() {
  local name pairs=()
  for name in "$@"; do pairs+=("$arc_dir/$name.json" "corr-$name"); done
  arc_broker publish "${pairs[@]}"
}
# arc_stub METHOD PATH [curl options]: a call to the stubs' own routes.
arc_stub() { curl -sf -X "$1" "$arc_api$2" "${@:3}"; }

# --- The consumers: the meemoo profile, as Docker's --env-file reads it (KEY=VALUE lines, no
# quoting), then what this machine changes.
arc_profile=()
while IFS= read -r line; do
  [[ $line =~ ^[A-Z_][A-Z0-9_]*= ]] && arc_profile+=("$line")
done <"$E2E_REPO/deploy/meemoo/meemoo.env.example"
arc_cleanup_profile=()
while IFS= read -r line; do
  [[ $line =~ ^[A-Z_][A-Z0-9_]*= ]] && arc_cleanup_profile+=("$line")
done <"$E2E_REPO/deploy/meemoo/cleanup-on-remove.env.example"
arc_local=(
  AMQP_URL="$arc_amqp_url" MEDIAHAVEN_URL="$arc_api" MEDIAHAVEN_CLIENT_ID=bucketfn-client
  MEDIAHAVEN_CLIENT_SECRET=client-secret-value MEDIAHAVEN_USERNAME=archivist
  MEDIAHAVEN_PASSWORD=archivist-password PID_SERVICE_URL="$arc_api/pid"
  ORGANISATIONS_API_URL="$arc_api/organisations" FTP_HOST="127.0.0.1:$arc_relay_port"
  FTP_USER=tra FTP_PASSWORD=tra-password FTP_TIMEOUT_SECS=5 HTTP_TIMEOUT_SECS=5
  # qas: the original's destination table sends everything there to DISK-SHARE-EVENTS, as it
  # sends a CP labelled `VRT` in production (docs/sidecar-on-create.md, where bucketfn differs).
  APP_ENVIRONMENT=qas
  # One more bucket, for a tenant the organisations API does not know.
  SOURCE_BUCKETS=MAM_HighresVideo,mam-collaterals,mam-unknown
  TENANT_BY_BUCKET=MAM_HighresVideo=OR-rf5kf25,mam-collaterals=OR-rf5kf25,mam-unknown=OR-0000000
  CONSUME_RETRY_DELAY_SECS=2 CONSUME_SHUTDOWN_SECS=5 LOG_FORMAT=text RUST_LOG=info
  LISTEN_ADDRESS=127.0.0.1
)
# arc_start FUNCTION LOG [VAR=VALUE...]: FUNCTION consume with the profile; its pid in
# arc_pid_<function with _>.
arc_start() {
  local function=$1 logfile=$2 profile=("${arc_profile[@]}")
  shift 2
  [ "$function" = cleanup-on-remove ] && profile+=("${arc_cleanup_profile[@]}")
  env -i PATH="$PATH" HOME="$HOME" "${profile[@]}" "${arc_local[@]}" PORT="$(free_port)" "$@" \
    "$BUCKETFN_BIN/$function" consume --storage "$arc_dir/store" >>"$logfile" 2>&1 &
  on_exit "kill $!"
  printf -v "arc_pid_${function//-/_}" %s "$!"
}
arc_sidecar_log="$arc_dir/sidecar.log"
arc_cleanup_log="$arc_dir/cleanup.log"
arc_consumers_up() {
  arc_start sidecar-on-create "$arc_sidecar_log"
  arc_start cleanup-on-remove "$arc_cleanup_log"
  wait_log "$arc_sidecar_log" 'Consuming.' && wait_log "$arc_cleanup_log" 'Consuming.'
}
check "archive: both functions consume with the meemoo profile from the original's queues" \
  arc_consumers_up

# What the original writes and requests (main.py's construct_*), and where they differ on
# purpose (docs/sidecar-on-create.md: a collateral's PID is its own; the XML declaration's quotes).
cat >"$arc_dir/original.py" <<'PY'
import json, os

def sidecar(pid, bucket, key, md5, collateral=None):
    """collateral: (media id, object use, essence pid)."""
    title, what = (f"Collateral: pid: {collateral[2]}", "Subtitles for essence") if collateral \
        else (f"Essence: pid: {pid}", "Main fragment for essence")
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<MediaHAVEN_external_metadata>",
             f"  <title>{title}</title>",
             f"  <description>{what}:\n    - filename: {key}\n    - CP: VRT\n    </description>",
             "  <MDProperties>", "    <CP>VRT</CP>", "    <CP_id>OR-rf5kf25</CP_id>",
             "    <sp_name>s3</sp_name>", f"    <PID>{pid}</PID>", "    <s3_domain>s3</s3_domain>",
             f"    <s3_bucket>{bucket}</s3_bucket>", f"    <s3_object_key>{key}</s3_object_key>",
             "    <s3_object_owner>Object Owner CN+OR-id</s3_object_owner>"]
    if collateral:
        lines.append(f"    <dc_identifier_localid>{collateral[0]}</dc_identifier_localid>")
    lines += ["    <object_level>file</object_level>",
              f"    <object_use>{collateral[1] if collateral else 'archive_master'}</object_use>",
              "    <ie_type>n/a</ie_type>", "    <dc_identifier_localids>",
              f"      <Bestandsnaam>{key}</Bestandsnaam>", "    </dc_identifier_localids>",
              f"    <md5>{md5}</md5>"]
    if collateral:
        lines += ["    <dc_relations>", f"      <is_verwant_aan>{collateral[2]}</is_verwant_aan>",
                  "    </dc_relations>"]
    lines += ["  </MDProperties>", "</MediaHAVEN_external_metadata>", ""]
    return "\n".join(lines)

def request(bucket, key, pid):
    extension = os.path.splitext(key)[1]
    return {"source": {"domain": {"name": "s3"}, "bucket": {"name": bucket}, "object": {"key": key}},
            "destination": {"path": f"/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/{pid}{extension}",
                            "host": "ftp://" + os.environ["FTP_HOST"]}}
PY

# arc_archived EXPECTATIONS: checks the sidecars on FTP and the requests taken from the
# file-transfer queue ($arc_dir/requests.jsonl) against EXPECTATIONS, JSON lines of
# {"bucket", "key", "md5", "correlation_id", "pid"?, "collateral"?: [media id, use, essence]}:
# one sidecar per key, the original's, under its PID; one request each, persistent, the
# original's, with the incoming message's correlation id.
arc_archived() {
  FTP_HOST="127.0.0.1:$arc_relay_port" python3 - "$arc_dir" "$arc_sidecars" "$1" <<'PY'
import glob, html, json, os, sys
sys.path.insert(0, sys.argv[1])
import original
folder, expectations = sys.argv[2], [json.loads(line) for line in sys.argv[3].splitlines() if line]
requests = [json.loads(line) for line in open(os.path.join(sys.argv[1], "requests.jsonl"))]
problems = []
for want in expectations:
    key = want["key"]
    tag = f"<s3_object_key>{html.escape(key, quote=False)}</s3_object_key>"
    files = [f for f in glob.glob(os.path.join(folder, "*.xml")) if tag in open(f).read()]
    if len(files) != 1:
        problems.append(f"{key}: sidecars {files}")
        continue
    pid = os.path.basename(files[0])[:-4]
    if want.get("pid") and pid != want["pid"]:
        problems.append(f"{key}: PID {pid}, expected {want['pid']}")
    collateral = want.get("collateral")
    expected = original.sidecar(pid, want["bucket"], key, want["md5"], collateral)
    if open(files[0]).read() != expected:
        problems.append(f"{key}: sidecar\n{open(files[0]).read()}\nexpected\n{expected}")
    mine = [r for r in requests if json.loads(r["body"])["source"]["object"]["key"] == key]
    # ARC_REPEATS_OK: a publish whose confirm the broker's restart cut off is sent again,
    # the same request (claim.rs's one window); anything else is one request.
    repeats_ok = os.environ.get("ARC_REPEATS_OK") == "1"
    sent = {(r["body"], r["correlation_id"], r["delivery_mode"]) for r in mine}
    if len(mine) != 1 and not (repeats_ok and len(sent) == 1):
        problems.append(f"{key}: {len(mine)} file-transfer requests")
        continue
    body = json.loads(mine[0]["body"])
    if body != original.request(want["bucket"], key, pid):
        problems.append(f"{key}: request {body}, expected {original.request(want['bucket'], key, pid)}")
    if mine[0]["correlation_id"] != want["correlation_id"] or mine[0]["delivery_mode"] != 2:
        problems.append(f"{key}: correlation id {mine[0]['correlation_id']}, delivery mode {mine[0]['delivery_mode']}")
    print(f"{key}: {pid}")
for problem in problems:
    print(problem, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
}
# arc_take_requests COUNT: waits for COUNT requests on the file-transfer queue and takes them.
arc_take_requests() {
  arc_wait_counts filetransfer "$1 0" "${2:-30}" || return 1
  arc_broker take filetransfer >"$arc_dir/requests.jsonl"
}

# --- An essence and a key with `+`, from the gateway's samples.
arc_md5=1234abcd1234abcd1234abcd1234abcd
arc_essence_key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Records"][0]["s3"]["object"]["key"])' \
  "$E2E_REPO/events/viaa/created.json")
arc_plus_key='2019+12/clip+1 %2B.MXF'
arc_object MAM_HighresVideo "$arc_essence_key" "$arc_md5"
arc_object MAM_HighresVideo "$arc_plus_key" "$arc_md5"
arc_event essence created.json
arc_event plus created-plus-key.json
arc_essences() {
  arc_send essence plus || return 1
  arc_take_requests 2 || return 1
  arc_settled || return 1
  arc_archived "$(printf '%s\n' \
    "{\"bucket\": \"MAM_HighresVideo\", \"key\": \"$arc_essence_key\", \"md5\": \"$arc_md5\", \"correlation_id\": \"corr-essence\"}" \
    "{\"bucket\": \"MAM_HighresVideo\", \"key\": \"$arc_plus_key\", \"md5\": \"$arc_md5\", \"correlation_id\": \"corr-plus\"}")" \
    >"$arc_dir/essences.pids"
}
check "archive: an essence and a key with + get the original's sidecars and requests, with the message's correlation id" \
  arc_essences
arc_pid_of() {
  awk -v k="$1: " 'index($0, k) == 1 { print substr($0, length(k) + 1) }' "$arc_dir/essences.pids" \
    2>/dev/null || true
}
arc_essence_pid=$(arc_pid_of "$arc_essence_key")

# --- MediaHaven ingests both sidecars; the essence gets a fragment with media id MEDIA-0001,
# as in the original's data model. Then the two collaterals of that media id, the second
# after MediaHaven ingested the first (which then answers first for the media id).
arc_ingest() { arc_stub POST "/_stub/ingest/$1" --data-binary @"$2" -H 'content-type: application/xml'; }
arc_ingest ESSENCE "$arc_sidecars/$arc_essence_pid.xml"
arc_ingest PLUS "$arc_sidecars/$(arc_pid_of "$arc_plus_key").xml"
arc_stub POST /_stub/records -H 'content-type: application/json' --data-binary @- <<JSON
[{"fragment_id": "FRAGMENT-MEDIA-0001", "is_fragment": true,
  "fields": {"s3_bucket": "MAM_HighresVideo", "s3_object_key": "$arc_essence_key",
             "CP_id": "OR-rf5kf25", "PID": "$arc_essence_pid",
             "dc_identifier_localid": "MEDIA-0001"}}]
JSON
arc_first_key=openOt/MEDIA-0001/subtitles.srt
arc_second_key=closedOt/MEDIA-0001/subtitles.srt
arc_object mam-collaterals "$arc_first_key" aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa
arc_object mam-collaterals "$arc_second_key" bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb
arc_event first created-collateral.json
arc_event second created-collateral.json "$arc_second_key"
arc_collaterals() {
  arc_send first || return 1
  arc_take_requests 1 || return 1
  arc_archived "{\"bucket\": \"mam-collaterals\", \"key\": \"$arc_first_key\", \"md5\": \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\", \"correlation_id\": \"corr-first\", \"pid\": \"${arc_essence_pid}_openOt\", \"collateral\": [\"MEDIA-0001\", \"subtitle\", \"$arc_essence_pid\"]}" >/dev/null ||
    return 1
  arc_ingest COLLATERAL-1 "$arc_sidecars/${arc_essence_pid}_openOt.xml" || return 1
  arc_send second || return 1
  arc_take_requests 1 || return 1
  arc_archived "{\"bucket\": \"mam-collaterals\", \"key\": \"$arc_second_key\", \"md5\": \"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\", \"correlation_id\": \"corr-second\", \"pid\": \"${arc_essence_pid}_closedOt\", \"collateral\": [\"MEDIA-0001\", \"subtitle\", \"$arc_essence_pid\"]}" >/dev/null ||
    return 1
  arc_ingest COLLATERAL-2 "$arc_sidecars/${arc_essence_pid}_closedOt.xml" || return 1
  arc_settled || return 1
  # Both relations went onto the essence's fragment, never onto the first collateral.
  arc_stub GET /_stub/seen | PID="$arc_essence_pid" python3 -c '
import json, os, sys
pid = os.environ["PID"]
updates = [(u[0], [t for t in ("openOt", "closedOt") if f"<is_verwant_aan>{pid}_{t}</is_verwant_aan>" in u[2]])
           for u in json.load(sys.stdin)["updates"]]
assert updates == [("FRAGMENT-MEDIA-0001", ["openOt"]), ("FRAGMENT-MEDIA-0001", ["closedOt"])], updates'
}
check "archive: the first and second collateral of one media id: the original's sidecars and requests, both related to the essence's fragment" \
  arc_collaterals

# --- Permanent failures dead-lettered as sent, and an ObjectRestore acknowledged.
printf '{"Records": [{"eventSource": "viaa:s3", "eventName": "ObjectCreated:Put"' >"$arc_dir/broken.json"
arc_object mam-unknown stranger.MXF "$arc_md5"
arc_event stranger created.json stranger.MXF mam-unknown
cp "$E2E_REPO/events/viaa/restore.json" "$arc_dir/restore.json"
arc_dead_lettered() {
  arc_send broken stranger restore || return 1
  # The broken body reaches both queues; the stranger is only sidecar-on-create's business.
  arc_wait_counts s3-events.dead "3 0" || return 1
  arc_settled || return 1
  arc_broker take s3-events.dead >"$arc_dir/dead.jsonl"
  python3 - "$arc_dir/dead.jsonl" "$arc_dir/broken.json" "$arc_dir/stranger.json" <<'PY' || return 1
import json, sys
dead = [json.loads(line) for line in open(sys.argv[1])]
got = sorted((m["correlation_id"], m["deaths"][0][0], m["deaths"][0][1]) for m in dead)
assert got == [("corr-broken", "s3-events", "rejected"), ("corr-broken", "s3-events-removed", "rejected"),
               ("corr-stranger", "s3-events", "rejected")], got
bodies = {m["correlation_id"]: m["body"] for m in dead}
assert bodies["corr-broken"] == open(sys.argv[2]).read(), bodies
assert bodies["corr-stranger"] == open(sys.argv[3]).read(), bodies
PY
  grep -F 'OR-0000000' "$arc_sidecar_log" | grep -qi 'organisation\|tenant' ||
    { log "no reason naming the unknown tenant: $(grep -F stranger "$arc_sidecar_log" | tail -2)"; return 1; }
  [ "$(arc_counts filetransfer)" = "0 0" ] && ! grep -qF stranger.MXF "$arc_sidecars"/*.xml
}
check "archive: a body that is no event and an unknown tenant are dead-lettered as sent; an ObjectRestore is acknowledged" \
  arc_dead_lettered

# --- Retryable failures: the PID service answers 503 twice; the transport server refuses
# connections at first. Each is delivered again and archived once.
arc_object MAM_HighresVideo retry-pid.MXF "$arc_md5"
arc_event retry-pid created.json retry-pid.MXF
arc_object MAM_HighresVideo retry-ftp.MXF "$arc_md5"
arc_event retry-ftp created.json retry-ftp.MXF
arc_retried() {
  local before
  arc_stub POST /_stub/fail -H 'content-type: application/json' \
    --data-binary '{"route": "pid", "status": 503, "times": 2}' || return 1
  before=$(grep -cF 'it will be delivered again' "$arc_sidecar_log")
  arc_send retry-pid || return 1
  arc_take_requests 1 20 || return 1
  [ "$(grep -cF 'it will be delivered again' "$arc_sidecar_log")" -ge $((before + 2)) ] ||
    { log "not retried twice: $(grep -F 'retry-pid' "$arc_sidecar_log" | tail -3)"; return 1; }
  log "retried: $(grep -F 'it will be delivered again' "$arc_sidecar_log" | tail -1 | cut -c1-400)"
  arc_archived "{\"bucket\": \"MAM_HighresVideo\", \"key\": \"retry-pid.MXF\", \"md5\": \"$arc_md5\", \"correlation_id\": \"corr-retry-pid\"}" >/dev/null ||
    return 1
  touch "$arc_dir/ftp-down"
  before=$(grep -cF 'it will be delivered again' "$arc_sidecar_log")
  arc_send retry-ftp || return 1
  local deadline=$((SECONDS + 20))
  until [ "$(grep -cF 'it will be delivered again' "$arc_sidecar_log")" -ge $((before + 1)) ]; do
    [ "$SECONDS" -lt "$deadline" ] || { log "the FTP failure was not retried"; return 1; }
    sleep 0.3
  done
  log "retried: $(grep -F 'it will be delivered again' "$arc_sidecar_log" | tail -1 | cut -c1-400)"
  rm "$arc_dir/ftp-down"
  arc_take_requests 1 20 || return 1
  arc_archived "{\"bucket\": \"MAM_HighresVideo\", \"key\": \"retry-ftp.MXF\", \"md5\": \"$arc_md5\", \"correlation_id\": \"corr-retry-ftp\"}" >/dev/null ||
    return 1
  arc_settled && [ "$(arc_counts s3-events.dead)" = "0 0" ]
}
check "archive: the PID service's 503s and an unreachable transport server are retried; one sidecar and one request each" \
  arc_retried

# --- The removal: the essence goes from the store, then its event comes; cleanup-on-remove
# deletes its collaterals, then the essence, and nothing of the key with `+`.
arc_removed() {
  rm "$arc_dir/store/MAM_HighresVideo/$arc_essence_key"
  cp "$E2E_REPO/events/viaa/removed.json" "$arc_dir/removed.json"
  arc_send removed || return 1
  local deadline=$((SECONDS + 20))
  until arc_stub GET /_stub/seen | grep -qF '"ESSENCE"'; do
    [ "$SECONDS" -lt "$deadline" ] || { log "the essence was not deleted: $(tail -3 "$arc_cleanup_log")"; return 1; }
    sleep 0.3
  done
  arc_settled || return 1
  arc_stub GET /_stub/seen | python3 -c '
import json, sys
deletes = [d[0] for d in json.load(sys.stdin)["deletes"]]
assert sorted(deletes[:2]) == ["COLLATERAL-1", "COLLATERAL-2"] and deletes[2:] == ["ESSENCE"], deletes' ||
    return 1
  [ "$(arc_counts s3-events.dead)" = "0 0" ] && [ "$(arc_counts filetransfer)" = "0 0" ]
}
check "archive: cleanup-on-remove consume takes the essence's collaterals, then the essence, from MediaHaven, and nothing else" \
  arc_removed

# --- A broker restart in the middle of a burst: MediaHaven's search stalls 300 ms per event,
# so that some are done, one in flight and the rest queued when the node stops.
arc_burst=()
for n in $(seq 1 20); do
  arc_object MAM_HighresVideo "burst-$n.MXF" "$arc_md5"
  arc_event "burst-$n" created.json "burst-$n.MXF"
  arc_burst+=("burst-$n")
done
# The node restarts with s3-events holding queued events and one in flight.
arc_restart_node() {
  arc_stub POST /_stub/fail -H 'content-type: application/json' \
    --data-binary '{"route": "search", "stall_ms": 300, "times": 40}' || return 1
  arc_send "${arc_burst[@]}" || return 1
  sleep 2
  [ "$(arc_counts s3-events)" != "0 0" ] || { log "the burst was over before the restart"; return 1; }
  log "restarting the node with s3-events at $(arc_counts s3-events) (ready unacked)"
  rabbitmqctl -n "$arc_node" -q stop_app >/dev/null
  sleep 1
  rabbitmqctl -n "$arc_node" -q start_app >/dev/null
  rabbitmqctl -n "$arc_node" -q await_startup >/dev/null
}
# The consumers reconnect and go on. The original's exchanges are not durable, so the restart
# deleted s3-events-exchange and filetransfer-exchange; bucketfn declares them again, as they
# were (CONSUME_EXCHANGE_DURABLE=false, AMQP_EXCHANGE_DURABLE=false), on reconnecting.
arc_consumers_survive() {
  arc_restart_node || return 1
  wait_log "$arc_sidecar_log" 'Lost the broker' 10 ||
    wait_log "$arc_sidecar_log" 'subscription ended' 5 || return 1
  sleep 8
  local failed=0
  kill -0 "$arc_pid_sidecar_on_create" 2>/dev/null ||
    { failed=1; log "sidecar-on-create stopped: $(grep 'Cannot consume' "$arc_sidecar_log" | tail -1)"; }
  kill -0 "$arc_pid_cleanup_on_remove" 2>/dev/null ||
    { failed=1; log "cleanup-on-remove stopped: $(grep 'Cannot consume' "$arc_cleanup_log" | tail -1)"; }
  [ "$failed" = 0 ]
}
check "archive: both consumers go on after a broker restart with the original's (non-durable) exchanges" \
  arc_consumers_survive

# The events of the burst, with the same consumers (nobody restarted or redeclared anything):
# nothing may be lost, nothing acknowledged before it was done.
arc_restart_loses_nothing() {
  local n want=()
  kill -0 "$arc_pid_sidecar_on_create" 2>/dev/null && kill -0 "$arc_pid_cleanup_on_remove" 2>/dev/null ||
    { log "a consumer stopped at the restart"; return 1; }
  arc_settled 90 || return 1
  local ready
  ready=$(arc_counts filetransfer)
  [ "${ready% *}" -ge 20 ] || { log "queue filetransfer holds $ready (ready unacked), expected 20 0"; return 1; }
  arc_broker take filetransfer >"$arc_dir/requests.jsonl"
  for n in $(seq 1 20); do
    want+=("{\"bucket\": \"MAM_HighresVideo\", \"key\": \"burst-$n.MXF\", \"md5\": \"$arc_md5\", \"correlation_id\": \"corr-burst-$n\"}")
  done
  ARC_REPEATS_OK=1 arc_archived "$(printf '%s\n' "${want[@]}")" >/dev/null &&
    [ "$(arc_counts s3-events.dead)" = "0 0" ]
}
arc_restart_check() {
  arc_restart_loses_nothing && return 0
  log "sidecar-on-create said last: $(tail -4 "$arc_sidecar_log")"
  log "cleanup-on-remove said last: $(tail -4 "$arc_cleanup_log")"
  return 1
}
check "archive: a broker restart mid-burst loses no event and acknowledges none early: one sidecar each, one request each or its identical repeat" \
  arc_restart_check

arc_stop() {
  local pid status=0
  for pid in "$arc_pid_sidecar_on_create" "$arc_pid_cleanup_on_remove"; do
    kill -TERM "$pid"
    wait "$pid" || status=$?
  done
  [ "$status" = 0 ]
}
check "archive: SIGTERM ends both consumers cleanly" arc_stop
