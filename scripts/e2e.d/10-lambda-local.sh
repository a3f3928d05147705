# All four functions as AWS Lambda runs them, locally, with real parts around them:
# cargo-lambda's emulator (`cargo lambda watch`, the real Runtime API), an S3 server process
# (s3s-fs), a RabbitMQ node (Debian's rabbitmq-server on loopback ports), and the archive API
# stubs and FTP server of the tests as a process (archive-stubs). Every sample in events/ goes
# to every function with `cargo lambda invoke --data-file` and each answer is checked; then
# the outputs: thumbnails in S3, sidecars on the FTP server, file-transfer requests on
# RabbitMQ, claim checks in the sink, clean-ups; last, all four as HTTP services (`serve`, as
# Knative runs them) get every CloudEvent sample from curl, binary mode with the samples'
# headers and structured mode, and one object announced both ways is made, archived and
# claimed once; and forward-to-stream publishes into Knative Eventing through K_SINK.
# Sourced by scripts/e2e.sh. Cold: cargo-lambda, zig and pika from PyPI (under a minute),
# RabbitMQ and Erlang from apt (about 25 s), s3s-fs from crates.io (about 3 min, once, cached).

need_apt rabbitmq-server
need_venv cargo-lambda ziglang pika
need_cargo_bin s3s-fs s3s-fs 0.14.1 --features binary

lam_dir=$(mktemp -d)
on_exit "rm -rf '$lam_dir'"

# --- The S3 server, and S3 requests signed by curl itself.
lam_s3_port=$(free_port)
lam_key=bucketfn-e2e-access
lam_secret=bucketfn-e2e-secret
mkdir -p "$lam_dir/s3"
s3s-fs --host 127.0.0.1 --port "$lam_s3_port" --access-key "$lam_key" --secret-key "$lam_secret" \
  "$lam_dir/s3" >"$lam_dir/s3s.log" 2>&1 &
on_exit "kill $!"
wait_port "$lam_s3_port"
lam_s3="http://127.0.0.1:$lam_s3_port"

# $1 method, $2 path (URL-encoded), the rest curl options; prints the HTTP status. S3 wants
# the payload hash header, which curl signs when it is given.
lam_s3_call() {
  curl -s -o "$lam_dir/s3-response" -w '%{http_code}' -X "$1" "$lam_s3/$2" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$lam_key:$lam_secret" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "${@:3}"
}
lam_url() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }
# lam_s3_expect CODE METHOD BUCKET KEY [curl options]: the request, answered with CODE.
lam_s3_expect() {
  local want=$1 method=$2 path code
  path="$3${4:+/$(lam_url "$4")}"
  code=$(lam_s3_call "$method" "$path" "${@:5}")
  [ "$code" = "$want" ] ||
    { log "S3 $method $path: HTTP $code, expected $want: $(head -c 300 "$lam_dir/s3-response")"; return 1; }
}

# Every bucket the samples name exists, as a deployment's do: a missing bucket is a permanent
# failure, never "the object no longer exists".
for bucket in media-uploads photos mam-highresvideo mam-ingest media-uploads-gcs cos-media \
  media-uploads-versioned mam-collaterals; do
  lam_s3_expect 200 PUT "$bucket"
done
# The objects the samples name: the AWS S3 samples' image, the gateway samples' essence.
lam_image_key='photos/2024/summer beach + café ☀.jpg'
lam_s3_expect 200 PUT media-uploads "$lam_image_key" \
  --data-binary @"$E2E_REPO/demo/photos/samples/lake at dawn.jpg"
lam_essence_key='191213-VAN statement+1.MXF'
# With the md5 in its metadata, as meemoo's gateway stores it (the sidecar takes the md5 from
# the object, never from the notification).
lam_s3_expect 200 PUT mam-highresvideo "$lam_essence_key" --data-binary essence \
  -H 'x-amz-meta-md5sum: 77930bf06b236e089a22a255e6b28377'

# --- RabbitMQ: its own node, on a port p with p + 20000 free too (Erlang distribution).
lam_amqp_port=$(python3 -c '
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
lam_node="bucketfn-e2e-$$@localhost"
# Its own folder: Debian's wrapper runs the node as the rabbitmq user.
lam_rabbit_dir=$(mktemp -d)
on_exit "rm -rf '$lam_rabbit_dir'"
chown rabbitmq: "$lam_rabbit_dir"
log "starting RabbitMQ node $lam_node on 127.0.0.1:$lam_amqp_port"
start_rabbitmq "$lam_node" "$lam_rabbit_dir" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
  RABBITMQ_NODE_PORT="$lam_amqp_port"
lam_amqp_url="amqp://guest:guest@127.0.0.1:$lam_amqp_port/%2f"

# --- The archive APIs (MediaHaven, PID service, organisations) and the FTP server.
lam_api_port=$(free_port)
lam_ftp_port=$(free_port)
mkdir -p "$lam_dir/ftp/VRT/DISK-SHARE-EVENTS"
"$BUCKETFN_BIN/archive-stubs" --http "127.0.0.1:$lam_api_port" --ftp-port "$lam_ftp_port" \
  --ftp-root "$lam_dir/ftp" --organisation OR-rf5kf25=VRT >"$lam_dir/stubs.log" 2>&1 &
on_exit "kill $!"
wait_port "$lam_api_port"
wait_port "$lam_ftp_port"
lam_api="http://127.0.0.1:$lam_api_port"

# The consumer side and the stubs' bookkeeping, in Python with pika.
cat >"$lam_dir/helper.py" <<'PY'
import json, sys, urllib.request
import pika

command, *args = sys.argv[1:]
if command == "take":
    # Every message on the queue, as JSON lines.
    channel = pika.BlockingConnection(pika.URLParameters(args[0])).channel()
    while True:
        method, props, body = channel.basic_get("filetransfer", auto_ack=True)
        if method is None:
            break
        print(json.dumps({"body": json.loads(body), "correlation_id": props.correlation_id,
                          "delivery_mode": props.delivery_mode,
                          "content_type": props.content_type}))
elif command == "seen":
    print(urllib.request.urlopen(args[0] + "/_stub/seen").read().decode())
elif command == "seed":
    request = urllib.request.Request(args[0] + "/_stub/records", data=sys.stdin.read().encode(),
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request)
PY

# --- The Lambda emulator, with one environment for all four functions (a file, since
# --env-var splits values at commas).
lam_port=$(free_port)
lam_claims="$lam_dir/claims.jsonl"
cat >"$lam_dir/lambda.env" <<ENV
AWS_ENDPOINT_URL_S3='$lam_s3'
AWS_ACCESS_KEY_ID='$lam_key'
AWS_SECRET_ACCESS_KEY='$lam_secret'
AWS_REGION='us-east-1'
S3_MAX_ATTEMPTS='1'
THUMBNAIL_SIZES='128,256'
SOURCE_BUCKET='media-uploads'
SOURCE_BUCKETS='*'
CLEANUP_TARGETS='derivatives,mediahaven'
FORWARD_SINK='file'
FORWARD_FILE='$lam_claims'
MEDIAHAVEN_URL='$lam_api'
MEDIAHAVEN_CLIENT_ID='bucketfn-client'
MEDIAHAVEN_CLIENT_SECRET='client-secret-value'
MEDIAHAVEN_USERNAME='archivist'
MEDIAHAVEN_PASSWORD='archivist-password'
MEDIAHAVEN_DELETE_DELAY_MS='10'
PID_SERVICE_URL='$lam_api/pid'
ORGANISATIONS_API_URL='$lam_api/organisations'
TENANT_BY_BUCKET='media-uploads=OR-rf5kf25,mam-highresvideo=OR-rf5kf25'
S3_DOMAIN='s3.archive.example'
FTP_HOST='127.0.0.1:$lam_ftp_port'
FTP_USER='tra'
FTP_PASSWORD='tra-password'
AMQP_URL='$lam_amqp_url'
AMQP_EXCHANGE='filetransfer'
AMQP_ROUTING_KEY='filetransfer'
AMQP_QUEUE='filetransfer'
AMQP_DECLARE='create'
ENV
cargo lambda watch --quiet --invoke-port "$lam_port" --env-file "$lam_dir/lambda.env" \
  >"$lam_dir/watch.log" 2>&1 &
lam_watch_pid=$!
on_exit "kill $lam_watch_pid"
# The emulator checks the workspace with cargo before it listens.
for _ in $(seq 1 900); do
  (exec 3<>"/dev/tcp/127.0.0.1/$lam_port") 2>/dev/null && break
  kill -0 "$lam_watch_pid" 2>/dev/null || break
  sleep 0.2
done
(exec 3<>"/dev/tcp/127.0.0.1/$lam_port") 2>/dev/null ||
  { log "cargo lambda watch is not listening: $(tail -5 "$lam_dir/watch.log")"; false; }

# Invokes function $1 with file $2; prints the function's answer, a JSON document whether it
# succeeded or failed, and fails only when the emulator could not deliver the invocation.
lam_invoke() {
  local answer
  answer=$(cargo lambda invoke --invoke-port "$lam_port" --data-file "$2" --output-format json "$1" 2>&1)
  if grep -q 'runtime emulator' <<<"$answer"; then
    log "cargo lambda invoke $1: $answer"
    return 1
  fi
  printf '%s\n' "$answer"
}

# The answer cargo lambda printed, in one word: `done` (every record), the error type of a
# failed invocation, or `failed:ID,...` for the records of a batch that failed.
lam_answer() {
  python3 -c '
import json, re, sys
text = sys.stdin.read()
error = re.match(r"\s*Error: (\S+)", text)
if error:
    print(error.group(1)); sys.exit()
answer = json.loads(text)
failed = [f["itemIdentifier"] for f in answer.get("batchItemFailures", [])]
failed += [r["resultCode"] + ":" + r["taskId"] for r in answer.get("results", [])
           if r["resultCode"] != "Succeeded"]
print("failed:" + ",".join(failed) if failed else "done")'
}

# What function $1 must answer to sample $2 (its path under events/).
lam_expected() {
  case "$1:$2" in
    # Unparseable JSON never reaches a function: the runtime itself refuses it.
    *:invalid/truncated.json) echo lambda_runtime::deserializer::DeserializeError ;;
    *:invalid/*) echo bucketfn.InvalidEvent ;;
    *:sqs/one-bad-message.json) echo failed:a1f0c2d3-0000-4000-8000-000000000002 ;;
    # Azure Blob Storage has no backend: reading a blob or listing beside it is refused.
    # (forward-to-stream: no store can confirm the blob a claim would announce.)
    thumbnail-on-create:azure/event-grid-created.json | sidecar-on-create:azure/event-grid-created.json | \
      cleanup-on-remove:azure/cloudevents-deleted.json | forward-to-stream:azure/event-grid-created.json)
      echo bucketfn.Permanent ;;
    # TENANT_BY_BUCKET names no tenant for these buckets (bucket metadata in an event is not
    # trusted).
    sidecar-on-create:ceph/created.json | sidecar-on-create:ceph/cloudevent-created.json | \
      sidecar-on-create:gcs/*finalize* | sidecar-on-create:demo/created.json | \
      sidecar-on-create:ibm-cos/write.json | sidecar-on-create:viaa/created-collateral.json)
      echo bucketfn.Permanent ;;
    # meemoo's gateway names a bucket S3 does not allow (MAM_HighresVideo, upper case and _):
    # the S3 server refuses it, as S3 would, and a refusal is never "the object is gone".
    # (thumbnail-on-create reads the first bytes of an object whose name is no image's.)
    thumbnail-on-create:viaa/created.json | thumbnail-on-create:viaa/created-plus-key.json | \
    sidecar-on-create:viaa/created.json | sidecar-on-create:viaa/created-plus-key.json | \
      cleanup-on-remove:viaa/removed.json | forward-to-stream:viaa/created.json | \
      forward-to-stream:viaa/created-plus-key.json) echo bucketfn.Permanent ;;
    # OCI events and S3 Batch tasks name no principal, and a sidecar needs the object's owner.
    sidecar-on-create:oci/createobject.json | sidecar-on-create:oci/updateobject.json)
      echo bucketfn.Permanent ;;
    sidecar-on-create:s3-batch/schema-v1.json) echo failed:PermanentFailure:dGFza2lkZ29lc2hlcmUK ;;
    sidecar-on-create:s3-batch/schema-v2.json) echo failed:PermanentFailure:dGFzay0yLjAK ;;
    *) echo "done" ;;
  esac
}

# Every JSON sample to function $1, each answer compared with lam_expected.
lam_every_sample_to() {
  local sample relative answer expected failed=0
  while IFS= read -r sample; do
    relative=${sample#"$E2E_REPO/events/"}
    # Binary-mode CloudEvents travel as HTTP headers, which Lambda payloads do not have.
    [ -e "${sample%.json}.headers" ] && continue
    answer=$(lam_invoke "$1" "$sample") || { failed=1; continue; }
    expected=$(lam_expected "$1" "$relative")
    [ "$(lam_answer <<<"$answer")" = "$expected" ] ||
      { log "$1 $relative: expected $expected, got: $answer"; failed=1; }
  done < <(find "$E2E_REPO/events" -name '*.json' | sort)
  [ "$failed" = 0 ]
}

for lam_function in thumbnail-on-create sidecar-on-create cleanup-on-remove forward-to-stream; do
  check "cargo lambda: every events/ sample to $lam_function" lam_every_sample_to "$lam_function"
done

# --- The outputs of that pass.

# Whether S3 answers GETs of the image's two thumbnails with HTTP $1.
# lam_thumbnails_answer CODE [KEY]: both thumbnails of KEY (the image) answer CODE.
lam_thumbnails_answer() {
  local size
  for size in 128 256; do
    lam_s3_expect "$1" GET media-uploads "thumbnails/${2:-$lam_image_key}/$size.jpg" || return 1
  done
}
# Removal samples arrived while the image was still there: they are stale, its thumbnails stay.
check "the image's thumbnails are in S3, and stale removals left them there" lam_thumbnails_answer 200

# The sidecar of key $1 on the FTP server (one file), or nothing.
lam_sidecar_of() {
  local text
  text=$(python3 -c 'import html, sys; print(html.escape(sys.argv[1], quote=False))' "$1")
  grep -lF "<s3_object_key>$text</s3_object_key>" "$lam_dir"/ftp/VRT/DISK-SHARE-EVENTS/*.xml 2>/dev/null
}

# Both created objects were archived once however many samples named them: one sidecar each,
# one file-transfer request each, persistent and with a correlation id, naming the sidecar's PID.
lam_archived_once() {
  local essence image
  essence=$(lam_sidecar_of "$lam_essence_key")
  image=$(lam_sidecar_of "$lam_image_key")
  [ "$(wc -l <<<"$essence")" = 1 ] && [ "$(wc -l <<<"$image")" = 1 ] ||
    { log "sidecars: essence [$essence], image [$image]"; return 1; }
  grep -q "<CP_id>OR-rf5kf25</CP_id>" "$essence" &&
    grep -q "<md5>77930bf06b236e089a22a255e6b28377</md5>" "$essence" ||
    { log "essence sidecar: $(cat "$essence")"; return 1; }
  python "$lam_dir/helper.py" take "$lam_amqp_url" >"$lam_dir/messages.jsonl"
  ESSENCE_PID=$(basename "$essence" .xml) IMAGE_PID=$(basename "$image" .xml) python - "$lam_dir/messages.jsonl" <<'PY'
import json, os, sys
messages = [json.loads(line) for line in open(sys.argv[1])]
keys = sorted(m["body"]["source"]["object"]["key"] for m in messages)
expected_keys = sorted(["191213-VAN statement+1.MXF", "photos/2024/summer beach + café ☀.jpg"])
essence = next((m for m in messages if m["body"]["source"]["bucket"]["name"] == "mam-highresvideo"), None)
pid = os.environ["ESSENCE_PID"]
ok = (keys == expected_keys and essence is not None
      and essence["body"]["source"]["domain"]["name"] == "s3.archive.example"
      and essence["body"]["destination"]["path"] == f"/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/{pid}.MXF"
      and all(m["delivery_mode"] == 2 and m["content_type"] == "application/json"
              and m["correlation_id"] for m in messages))
if not ok:
    print("unexpected messages:", json.dumps(messages), "essence PID", pid, file=sys.stderr)
sys.exit(0 if ok else 1)
PY
}
check "sidecar-on-create: one sidecar on FTP and one request on RabbitMQ per created object" \
  lam_archived_once

# Claim checks: one per object version the store holds (each is HEADed
# first: the objects only samples name are not in the S3 server, so nothing announces them), and
# the same object version always has the same CloudEvent id, whichever envelope brought it.
lam_claims_are_right() {
  python3 - "$lam_claims" <<'PY'
import collections, json, sys
ids = collections.defaultdict(list)
for line in open(sys.argv[1]):
    message = json.loads(line)
    claim = json.loads(message["body"])
    version = (claim["bucket"], claim["key"], claim.get("version_id"), claim.get("etag"))
    ids[version].append(message["headers"]["ce_id"])
announced = {v[:2] for v in ids}
assert ("media-uploads", "photos/2024/summer beach + café ☀.jpg") in announced, sorted(map(str, ids))
# Named by samples (SQS, GCS), never stored: no claim (the sweeps' claims are of what they list).
assert ("media-uploads", "video/東京 2024.mp4") not in announced, sorted(map(str, ids))
split = {v: set(i) for v, i in ids.items() if len(set(i)) > 1}
assert not split, f"one object version, several ids: {split}"
# Several envelopes (S3, SQS, SNS, EventBridge...) announce the same version of one image: the
# first forwards it, the rest find its forwarded marker, so each version is sent once.
assert all(len(i) == 1 for i in ids.values()), {v: i for v, i in ids.items() if len(i) > 1}
PY
}
check "forward-to-stream: claim checks written, one id per object version" lam_claims_are_right

# --- Removals: the objects go, then their removal events arrive.
lam_removed_everything() {
  local name
  lam_s3_expect 204 DELETE media-uploads "$lam_image_key" || return 1
  [ "$(lam_answer <<<"$(lam_invoke cleanup-on-remove "$E2E_REPO/events/aws-s3/removed.json")")" = "done" ] ||
    return 1
  lam_thumbnails_answer 404 || return 1
  # The essence: thumbnails of its own, other files beside them, and records in MediaHaven.
  for name in 256.jpg 64.webp notes.txt x.jpg/256.jpg; do
    lam_s3_expect 200 PUT mam-highresvideo "thumbnails/$lam_essence_key/$name" --data-binary t ||
      return 1
  done
  python "$lam_dir/helper.py" seed "$lam_api" <<JSON
[{"fragment_id": "ESSENCE", "is_fragment": false,
  "fields": {"s3_object_key": "$lam_essence_key", "s3_bucket": "mam-highresvideo"}},
 {"fragment_id": "FRAGMENT", "is_fragment": true,
  "fields": {"s3_object_key": "$lam_essence_key", "s3_bucket": "mam-highresvideo",
             "dc_identifier_localid": "M1"}},
 {"fragment_id": "SUBS", "is_fragment": false, "fields": {"dc_identifier_localid": "M1"}}]
JSON
  lam_s3_expect 204 DELETE mam-highresvideo "$lam_essence_key" || return 1
  [ "$(lam_answer <<<"$(lam_invoke cleanup-on-remove "$E2E_REPO/events/gateway/removed.json")")" = "done" ] ||
    return 1
  lam_s3_expect 404 GET mam-highresvideo "thumbnails/$lam_essence_key/256.jpg" &&
    lam_s3_expect 404 GET mam-highresvideo "thumbnails/$lam_essence_key/64.webp" &&
    lam_s3_expect 200 GET mam-highresvideo "thumbnails/$lam_essence_key/notes.txt" &&
    lam_s3_expect 200 GET mam-highresvideo "thumbnails/$lam_essence_key/x.jpg/256.jpg" || return 1
  python "$lam_dir/helper.py" seen "$lam_api" | python -c '
import json, sys
ids = [d[0] for d in json.load(sys.stdin)["deletes"]]
if ids != ["SUBS", "ESSENCE"]:
    sys.exit(f"MediaHaven deletes: {ids}")'
}
check "cleanup-on-remove: thumbnails and MediaHaven collateral and essence go, nothing else" \
  lam_removed_everything

# --- All four as Knative services: CloudEvents over HTTP from curl, binary mode with the
# samples' headers and structured mode, with the same environment as under Lambda.
lam_claims_http="$lam_dir/claims-http.jsonl"
# What a MinIO webhook's auth_token or a curl with a header sends (scripts/e2e.d/45-attacks.sh
# attacks the services without it).
lam_event_token=e2e-lambda-local-token-0123
declare -A lam_http_port
for lam_function in thumbnail-on-create sidecar-on-create cleanup-on-remove forward-to-stream; do
  lam_http_port[$lam_function]=$(free_port)
  (
    set -a
    # shellcheck disable=SC1091
    source "$lam_dir/lambda.env"
    PORT=${lam_http_port[$lam_function]} FORWARD_FILE=$lam_claims_http
    EVENT_AUTH=token EVENT_TOKEN=$lam_event_token
    exec "$BUCKETFN_BIN/$lam_function" serve
  ) >"$lam_dir/serve-$lam_function.log" 2>&1 &
  on_exit "kill $!"
done
for lam_function in "${!lam_http_port[@]}"; do wait_port "${lam_http_port[$lam_function]}"; done
# The AWS S3 adapter's structured sample names an object that now exists.
lam_adapter_key='photos/adapter & co.jpg'
lam_s3_expect 200 PUT media-uploads "$lam_adapter_key" \
  --data-binary @"$E2E_REPO/demo/photos/samples/lake at dawn.jpg"

# Posts sample $2 (a body; headers from its .headers file if there is one, else structured
# mode) to function $1; prints the HTTP status.
lam_post() {
  local headers=(-H 'content-type: application/cloudevents+json' -H "authorization: Bearer $lam_event_token")
  [ -f "${2%.*}.headers" ] && headers=(-H @"${2%.*}.headers" -H "authorization: Bearer $lam_event_token")
  curl -s -o "$lam_dir/http-response" -w '%{http_code}' -X POST \
    "http://127.0.0.1:${lam_http_port[$1]}/" "${headers[@]}" --data-binary @"$2"
}

# Every CloudEvent sample to every service, answered as under Lambda: 202 when done (made,
# or skipped as not this function's business or about an object that is gone), 400 when
# permanent, so Knative's delivery sends it to the dead-letter sink instead of retrying.
lam_cloudevents_over_http() {
  local function sample body name want code failed=0
  for function in thumbnail-on-create sidecar-on-create cleanup-on-remove forward-to-stream; do
    for sample in "$E2E_REPO"/events/*/*.headers $(grep -l '"specversion"' "$E2E_REPO"/events/*/*.json); do
      if [[ $sample == *.headers ]]; then
        for body in "${sample%.headers}".*; do [[ $body == *.headers ]] || { sample=$body; break; }; done
      fi
      name=${sample#"$E2E_REPO/events/"}
      case $(lam_expected "$function" "$name") in
        done) want=202 ;;
        bucketfn.Permanent) want=400 ;;
        *) want="?" ;;
      esac
      code=$(lam_post "$function" "$sample")
      [ "$code" = "$want" ] ||
        { log "$function $name: HTTP $code, expected $want: $(head -c 300 "$lam_dir/http-response")"; failed=1; }
    done
    code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:${lam_http_port[$function]}/" \
      -H "authorization: Bearer $lam_event_token" \
      -H 'content-type: application/json' --data-binary @"$E2E_REPO/events/invalid/truncated.json")
    [ "$code" = 400 ] || { log "$function: invalid JSON answered $code"; failed=1; }
  done
  [ "$failed" = 0 ]
}
check "all four as HTTP services: every CloudEvent sample from curl, binary and structured" \
  lam_cloudevents_over_http

# The adapter's object, announced in both modes: its thumbnails, one claim id, one archive.
lam_http_outputs() {
  lam_thumbnails_answer 200 "$lam_adapter_key" || return 1
  [ "$(lam_sidecar_of "$lam_adapter_key" | wc -l)" = 1 ] ||
    { log "sidecars of the adapter's object: [$(lam_sidecar_of "$lam_adapter_key")];" \
      "sidecar-on-create said: $(tail -n 5 "$lam_dir/serve-sidecar-on-create.log")"; return 1; }
  python "$lam_dir/helper.py" take "$lam_amqp_url" >"$lam_dir/messages-http.jsonl"
  KEY=$lam_adapter_key python3 - "$lam_dir/messages-http.jsonl" "$lam_claims_http" <<'PY'
import json, os, sys
keys = [json.loads(line)["body"]["source"]["object"]["key"] for line in open(sys.argv[1])]
assert keys == [os.environ["KEY"]], f"file-transfer requests: {keys}"
# By version: the PingSource's catch-up sweep announces the stored etag, the samples theirs.
ids = {}
for line in open(sys.argv[2]):
    message = json.loads(line)
    claim = json.loads(message["body"])
    if claim["key"] == os.environ["KEY"]:
        ids.setdefault((claim.get("version_id"), claim.get("etag")), set()).add(message["headers"]["ce_id"])
assert ids and all(len(i) == 1 for i in ids.values()), f"claim ids of the adapter's object: {ids}"
PY
}
check "over HTTP: thumbnails, one sidecar, one file-transfer request, one claim id" lam_http_outputs

# --- forward-to-stream publishing into Knative Eventing: K_SINK (as a SinkBinding injects it)
# points at a CloudEvents receiver that answers 503 to the first delivery, as a Broker that is
# not ready yet does, then records what arrives.
lam_ksink_port=$(free_port)
python3 - "$lam_ksink_port" "$lam_dir/k-sink.jsonl" >"$lam_dir/k-sink.log" 2>&1 <<'PY' &
import http.server, json, sys
port, out = int(sys.argv[1]), sys.argv[2]
refused = []
class Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if not refused:
            refused.append(True)
            self.send_response(503); self.end_headers(); return
        with open(out, "a") as f:
            f.write(json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()},
                                "body": body.decode()}) + "\n")
        self.send_response(202); self.end_headers()
http.server.HTTPServer(("127.0.0.1", port), Receiver).serve_forever()
PY
on_exit "kill $!"
wait_port "$lam_ksink_port"
lam_ksink_service=$(free_port)
(
  set -a
  # shellcheck disable=SC1091
  source "$lam_dir/lambda.env"
  # A second deployment over the same buckets, to another sink: markers of its own, or the
  # first deployment's would say that these objects were forwarded already.
  CHECKPOINT_PREFIX=.forward-to-k-sink/
  PORT=$lam_ksink_service FORWARD_SINK=k-sink K_SINK="http://127.0.0.1:$lam_ksink_port/"
  K_CE_OVERRIDES='{"extensions": {"cluster": "e2e"}}' K_SINK_BACKOFF_MS=50
  EVENT_AUTH=token EVENT_TOKEN=$lam_event_token
  exec "$BUCKETFN_BIN/forward-to-stream" serve
) >"$lam_dir/serve-k-sink.log" 2>&1 &
on_exit "kill $!"
wait_port "$lam_ksink_service"

lam_forwarded_to_k_sink() {
  local code
  code=$(curl -s -o "$lam_dir/http-response" -w '%{http_code}' -X POST "http://127.0.0.1:$lam_ksink_service/" \
    -H 'content-type: application/cloudevents+json' -H "authorization: Bearer $lam_event_token" \
    --data-binary @"$E2E_REPO/events/cloudevents/aws-s3-adapter-structured.json")
  [ "$code" = 202 ] || { log "forward-to-stream answered $code: $(cat "$lam_dir/http-response")"; return 1; }
  python3 - "$lam_dir/k-sink.jsonl" <<'PY'
import json, sys, urllib.parse
events = [json.loads(line) for line in open(sys.argv[1])]
assert len(events) == 1, events
headers, claim = events[0]["headers"], json.loads(events[0]["body"])
assert headers["ce-specversion"] == "1.0" and headers["ce-type"] == "io.bucketfn.object.created", headers
assert headers["ce-source"] == "s3://media-uploads" and headers["ce-cluster"] == "e2e", headers
# The key travels percent-encoded in the header (HTTP binding) and as it is in the data.
assert headers["ce-subject"] == "photos/adapter%20&%20co.jpg", headers["ce-subject"]
assert urllib.parse.unquote(headers["ce-subject"]) == claim["key"] == "photos/adapter & co.jpg", claim
assert headers["content-type"] == "application/json", headers
PY
}
check "forward-to-stream into Knative: K_SINK gets the claim as a binary-mode CloudEvent after a 503" \
  lam_forwarded_to_k_sink
