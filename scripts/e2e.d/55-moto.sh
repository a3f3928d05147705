# The S3-facing checks against a second, independent S3 implementation: moto's server (PyPI),
# since s3s alone cannot show what other stores do. The functions reach it as any S3-compatible
# store (aws-sdk-s3 through AWS_ENDPOINT_URL_S3, path style); the objects are put and read back
# with boto3, a client that is not ours. Checked: what moto enforces (conditional writes and
# deletes, url-encoded listings); a thumbnail on a created event; a sweep over keys XML cannot
# carry unencoded (a control character) and keys with `%` and `+`; removes that find the object
# still there (dated in the future, or of a version that is no longer current) delete nothing,
# and one for a deleted object deletes its thumbnails; a move (DELETE_SOURCE=true) followed by
# the cleanup its own delete triggers keeps the thumbnails and the original's copy; one thumbnail
# bucket serving two source buckets keeps both sets apart; a missing bucket stops the start-up,
# and an event naming one is a permanent failure, never a skip; the forward-to-stream sweep's
# checkpoint works where the store enforces conditional writes, and is refused by name behind a
# proxy that drops If-None-Match and If-Match. Sourced by scripts/e2e.sh.
# Cold: moto[server] from PyPI into .cache/venv (about 20 s).

mo_dir=$(mktemp -d)
on_exit "rm -rf '$mo_dir'"
start_moto "$mo_dir/moto.log"
log "moto $E2E_MOTO_VERSION at $moto_url"

# The S3 side of the checks, through boto3, and the notifications the functions are given.
cat >"$mo_dir/s3.py" <<'PY'
import datetime, json, os, sys, urllib.parse
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

s3 = boto3.client("s3", endpoint_url=os.environ.get("S3_URL"), region_name="us-east-1",
                  aws_access_key_id="moto", aws_secret_access_key="moto",
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}))


def status(call):
    """The HTTP status of a request that may be refused."""
    try:
        return call()["ResponseMetadata"]["HTTPStatusCode"]
    except ClientError as e:
        return e.response["ResponseMetadata"]["HTTPStatusCode"]


def head(bucket, key):
    try:
        return s3.head_object(Bucket=bucket, Key=key)
    except ClientError as e:
        if e.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
            return None
        raise


command, *args = sys.argv[1:]
if command == "mkbucket":
    bucket, *versioned = args
    s3.create_bucket(Bucket=bucket)
    if versioned:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
elif command == "put":
    # Prints the new object's version id (empty on an unversioned bucket).
    bucket, key, path = args
    with open(path, "rb") as body:
        answer = s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="image/jpeg")
    print(answer.get("VersionId", ""))
elif command == "delete":
    bucket, key, *version = args
    s3.delete_object(Bucket=bucket, Key=key, **({"VersionId": version[0]} if version else {}))
elif command in ("present", "absent"):
    # Every key named is there (present) or none is (absent); names the ones that are not so.
    bucket, *keys = args
    wrong = [key for key in keys if (head(bucket, key) is None) == (command == "present")]
    if wrong:
        sys.exit(f"{bucket}: {'missing' if command == 'present' else 'still there'}: {wrong!r}")
elif command == "thumbnail-of":
    # The object is a JPEG thumbnail whose metadata names this source bucket, key and etag
    # (metadata values travel percent-encoded, as HTTP headers cannot carry every character).
    bucket, key, source_bucket, source_key, source_etag = args
    info = head(bucket, key)
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read() if info else b""
    meta = info["Metadata"] if info else {}
    expected = {"source-bucket": source_bucket, "source-key": source_key, "source-etag": source_etag}
    got = {name: urllib.parse.unquote(meta.get(name, "")) for name in expected}
    if not body.startswith(b"\xff\xd8") or info["ContentType"] != "image/jpeg" or got != expected:
        sys.exit(f"{bucket}/{key!r}: {info and info['ContentType']}, {body[:4]!r}, metadata {meta}")
elif command == "etag":
    bucket, key = args
    print(head(bucket, key)["ETag"].strip('"'))
elif command == "same-bytes":
    bucket, key, other = args
    a = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    b = s3.get_object(Bucket=bucket, Key=other)["Body"].read()
    if a != b:
        sys.exit(f"{bucket}/{key!r} ({len(a)} bytes) differs from {other!r} ({len(b)} bytes)")
elif command == "body":
    bucket, key = args
    sys.stdout.buffer.write(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
elif command == "put-text":
    bucket, key, text = args
    s3.put_object(Bucket=bucket, Key=key, Body=text.encode())
elif command == "ignores-conditions":
    # The store at S3_URL writes a key twice under If-None-Match: * (as the proxy makes it).
    bucket = args[0]
    codes = [status(lambda: s3.put_object(Bucket=bucket, Key="probe", Body=b"x", IfNoneMatch="*"))
             for _ in range(2)]
    s3.delete_object(Bucket=bucket, Key="probe")
    if codes != [200, 200]:
        sys.exit(f"{bucket}: If-None-Match answered {codes}, not ignored")
elif command == "conditions":
    # What moto does with the conditions the functions send; exits 1 naming what it ignores.
    bucket = args[0]
    s3.create_bucket(Bucket=bucket)
    first = s3.put_object(Bucket=bucket, Key="k", Body=b"one", IfNoneMatch="*")["ETag"]
    facts = {
        "PUT If-None-Match: * on an existing key": status(
            lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")),
        "PUT If-Match with a stale etag": status(
            lambda: s3.put_object(Bucket=bucket, Key="k", Body=b"two", IfMatch='"0000"')),
        "DELETE If-Match with a stale etag": status(
            lambda: s3.delete_object(Bucket=bucket, Key="k", IfMatch='"0000"')),
    }
    survived = s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"one"
    facts["DELETE If-Match with the current etag"] = status(
        lambda: s3.delete_object(Bucket=bucket, Key="k", IfMatch=first))
    gone = head(bucket, "k") is None
    # Listed url-encoded (boto3 asks for encoding-type=url and decodes), a key with U+0001 and
    # one with `%` and `+` come back as they were written.
    keys = ["a\x01b", "100% + more"]
    for key in keys:
        s3.put_object(Bucket=bucket, Key=key, Body=b"x")
    listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
    for name, code in facts.items():
        print(f"[e2e] moto: {name}: HTTP {code}", file=sys.stderr)
    ok = (list(facts.values()) == [412, 412, 412, 204] and survived and gone
          and sorted(listed) == sorted(keys))
    if not ok:
        sys.exit(f"moto: {facts}, survived {survived}, gone {gone}, listed {listed!r}")
elif command == "event":
    # An S3 notification: KIND (created or removed) BUCKET KEY [TIME [VERSION]] (no TIME or an
    # empty one: now); the key form-encoded as S3 sends it.
    kind, bucket, key, *rest = args
    when = rest[0] if rest and rest[0] else datetime.datetime.now(datetime.timezone.utc).isoformat()
    obj = {"key": urllib.parse.quote_plus(key, safe="/"), "sequencer": "0065A1B2C3D4E5F601"}
    if len(rest) > 1:
        obj["versionId"] = rest[1]
    name = "ObjectCreated:Put" if kind == "created" else "ObjectRemoved:Delete"
    print(json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventTime": when, "eventName": name,
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"},
               "object": obj}}]}))
else:
    sys.exit(f"unknown command {command}")
PY
mo_s3() { S3_URL=$moto_url python "$mo_dir/s3.py" "$@"; }

# mo_fn [VAR=VALUE...] FUNCTION ARGS...: runs a function binary against moto, its standard
# output in $mo_dir/out and its standard error in $mo_dir/err; returns its exit code.
mo_env=(
  AWS_ENDPOINT_URL_S3="$moto_url" AWS_ACCESS_KEY_ID=moto AWS_SECRET_ACCESS_KEY=moto
  AWS_REGION=us-east-1 S3_MAX_ATTEMPTS=1 THUMBNAIL_SIZES=128,256 RUST_LOG=warn
)
mo_fn() {
  local settings=()
  while [[ $1 == *=* ]]; do settings+=("$1"); shift; done
  local function=$1
  shift
  env "${mo_env[@]}" "${settings[@]}" "$BUCKETFN_BIN/$function" "$@" >"$mo_dir/out" 2>"$mo_dir/err"
}
mo_said() { log "said: $(cat "$mo_dir/out") $(tail -n 5 "$mo_dir/err")"; }
# mo_invoke [VAR=VALUE...] FUNCTION KIND BUCKET KEY [TIME [VERSION]]: one notification, which
# must succeed (done or skipped).
mo_invoke() {
  local settings=()
  while [[ $1 == *=* ]]; do settings+=("$1"); shift; done
  mo_s3 event "${@:2}" >"$mo_dir/event.json"
  mo_fn "${settings[@]}" "$1" invoke "$mo_dir/event.json" && grep -q '^succeeded' "$mo_dir/out" ||
    { mo_said; return 1; }
}

mo_image="$E2E_REPO/demo/photos/samples/lake at dawn.jpg"
# mo_thumbnails_of BUCKET KEY [THUMBNAIL_BUCKET [FOLDER]]: both sizes are thumbnails of this
# version of BUCKET/KEY, under thumbnails/FOLDER/ (FOLDER: the key).
mo_thumbnails_of() {
  local etag size
  etag=$(mo_s3 etag "$1" "$2") || return 1
  for size in 128 256; do
    mo_s3 thumbnail-of "${3:-$1}" "thumbnails/${4:-$2}/$size.jpg" "$1" "$2" "$etag" || return 1
  done
}
# mo_thumbnails present|absent BUCKET FOLDER: both sizes under thumbnails/FOLDER/ are there, or
# neither is.
mo_thumbnails() { mo_s3 "$1" "$2" "thumbnails/$3/128.jpg" "thumbnails/$3/256.jpg"; }

check "moto refuses stale If-None-Match and If-Match on PUT and DELETE, and lists any key url-encoded" \
  mo_s3 conditions mo-conditions

# --- thumbnail-on-create on a created event.
mo_s3 mkbucket mo-photos
mo_photo='summer/lake at dawn + 1.jpg'
mo_s3 put mo-photos "$mo_photo" "$mo_image" >/dev/null
mo_created_makes_thumbnails() {
  mo_invoke SOURCE_BUCKETS=mo-photos thumbnail-on-create created mo-photos "$mo_photo" &&
    mo_thumbnails_of mo-photos "$mo_photo"
}
check "thumbnail-on-create: a created event makes both thumbnails in moto, with the source's etag" \
  mo_created_makes_thumbnails

# --- A sweep over keys that only a url-encoded listing carries.
mo_s3 mkbucket mo-keys
mo_odd_keys=($'a\x01b.jpg' '100% + more.jpg' 'plain.jpg')
for mo_key in "${mo_odd_keys[@]}"; do mo_s3 put mo-keys "$mo_key" "$mo_image" >/dev/null; done
mo_sweep_lists_every_key() {
  local key
  mo_fn SOURCE_BUCKETS=mo-keys thumbnail-on-create sweep --bucket mo-keys &&
    grep -q '3 done, [0-9]* skipped, 0 failed; finished' "$mo_dir/out" || { mo_said; return 1; }
  for key in "${mo_odd_keys[@]}"; do mo_thumbnails_of mo-keys "$key" || return 1; done
  # Again: every thumbnail is found current by the keys the listing gave.
  mo_fn SOURCE_BUCKETS=mo-keys thumbnail-on-create sweep --bucket mo-keys &&
    grep -q '0 done, [0-9]* skipped, 0 failed; finished' "$mo_dir/out" || { mo_said; return 1; }
}
check "thumbnail-on-create sweep: keys with U+0001, % and + are listed and get thumbnails" \
  mo_sweep_lists_every_key

# --- Removes: only a gone object's thumbnails go.
mo_removes_check_the_store() {
  mo_invoke SOURCE_BUCKETS=mo-photos CLEANUP_TARGETS=derivatives cleanup-on-remove removed mo-photos \
    "$mo_photo" 2099-01-01T00:00:00.000Z &&
    mo_thumbnails present mo-photos "$mo_photo" || return 1
  mo_s3 delete mo-photos "$mo_photo"
  mo_invoke SOURCE_BUCKETS=mo-photos CLEANUP_TARGETS=derivatives cleanup-on-remove removed mo-photos "$mo_photo" &&
    mo_thumbnails absent mo-photos "$mo_photo"
}
check "cleanup-on-remove: a remove dated 2099 of a live object deletes nothing; once it is gone, its thumbnails go" \
  mo_removes_check_the_store

mo_s3 mkbucket mo-versions versioned
# The image again with a comment segment after its start marker: other bytes, same picture.
{ head -c 2 "$mo_image"; printf '\xff\xfe\x00\x04v2'; tail -c +3 "$mo_image"; } >"$mo_dir/lake-v2.jpg"
mo_old_version_removed() {
  local old
  old=$(mo_s3 put mo-versions lake.jpg "$mo_image") &&
    mo_s3 put mo-versions lake.jpg "$mo_dir/lake-v2.jpg" >/dev/null &&
    mo_invoke SOURCE_BUCKETS=mo-versions thumbnail-on-create created mo-versions lake.jpg &&
    mo_s3 delete mo-versions lake.jpg "$old" || return 1
  mo_invoke SOURCE_BUCKETS=mo-versions CLEANUP_TARGETS=derivatives cleanup-on-remove removed mo-versions \
    lake.jpg "" "$old" &&
    mo_thumbnails present mo-versions lake.jpg
}
check "cleanup-on-remove: the remove of an old version keeps the current version's thumbnails" \
  mo_old_version_removed

# --- A move, then the cleanup its own delete triggers, on one bucket.
mo_s3 mkbucket mo-moves
mo_moved='in/lake.jpg'
mo_s3 put mo-moves "$mo_moved" "$mo_image" >/dev/null
# mo_moved_kept: the moved image's thumbnails and its unchanged copy are there.
mo_moved_kept() {
  mo_thumbnails present mo-moves "$mo_moved" || return 1
  [ "$(mo_s3 body mo-moves "thumbnails/$mo_moved/original.jpg" | md5sum)" = "$(md5sum <"$mo_image")" ] ||
    { log "thumbnails/$mo_moved/original.jpg is not the image"; return 1; }
}
mo_move_then_cleanup() {
  local etag
  etag=$(mo_s3 etag mo-moves "$mo_moved") || return 1
  mo_invoke SOURCE_BUCKETS=mo-moves DELETE_SOURCE=true thumbnail-on-create created mo-moves "$mo_moved" &&
    mo_s3 absent mo-moves "$mo_moved" && mo_moved_kept &&
    mo_s3 thumbnail-of mo-moves "thumbnails/$mo_moved/256.jpg" mo-moves "$mo_moved" "$etag" || return 1
  mo_invoke SOURCE_BUCKETS=mo-moves CLEANUP_TARGETS=derivatives cleanup-on-remove removed mo-moves "$mo_moved" ||
    return 1
  mo_moved_kept || { log "after the cleanup of the move's own delete"; return 1; }
}
check "DELETE_SOURCE=true then cleanup-on-remove on one bucket: thumbnails and original.jpg stay" \
  mo_move_then_cleanup

# --- One thumbnail bucket for two source buckets.
for mo_bucket in mo-source-a mo-source-b mo-thumbs; do mo_s3 mkbucket "$mo_bucket"; done
mo_s3 put mo-source-a same.jpg "$mo_image" >/dev/null
mo_s3 put mo-source-b same.jpg "$mo_image" >/dev/null
mo_shared=(SOURCE_BUCKETS=mo-source-a,mo-source-b THUMBNAIL_BUCKET=mo-thumbs)
mo_shared_thumbnail_bucket() {
  mo_invoke "${mo_shared[@]}" thumbnail-on-create created mo-source-a same.jpg &&
    mo_invoke "${mo_shared[@]}" thumbnail-on-create created mo-source-b same.jpg &&
    mo_thumbnails_of mo-source-a same.jpg mo-thumbs mo-source-a/same.jpg &&
    mo_thumbnails_of mo-source-b same.jpg mo-thumbs mo-source-b/same.jpg || return 1
  mo_s3 delete mo-source-a same.jpg
  mo_invoke "${mo_shared[@]}" CLEANUP_TARGETS=derivatives cleanup-on-remove removed mo-source-a same.jpg &&
    mo_thumbnails absent mo-thumbs mo-source-a/same.jpg &&
    mo_thumbnails_of mo-source-b same.jpg mo-thumbs mo-source-b/same.jpg
}
check "THUMBNAIL_BUCKET shared by two source buckets: two sets, and one's removal leaves the other" \
  mo_shared_thumbnail_bucket

# --- Missing buckets.
mo_s3 event created mo-photos missing.jpg >"$mo_dir/photos-created.json"
# mo_refused_at_start BUCKET [VAR=VALUE...] FUNCTION: the function does not start (exit 2), and
# says which bucket does not exist.
mo_refused_at_start() {
  local bucket=$1 code=0
  shift
  mo_fn "$@" invoke "$mo_dir/photos-created.json" || code=$?
  [ "$code" = 2 ] && grep -q "\"$bucket\" does not exist" "$mo_dir/err" ||
    { log "exit $code"; mo_said; return 1; }
}
check "thumbnail-on-create with SOURCE_BUCKETS naming a missing bucket does not start, naming it" \
  mo_refused_at_start mo-absent SOURCE_BUCKETS=mo-photos,mo-absent thumbnail-on-create
check "cleanup-on-remove with a missing THUMBNAIL_BUCKET does not start, naming it" \
  mo_refused_at_start mo-absent-thumbs SOURCE_BUCKETS=mo-photos THUMBNAIL_BUCKET=mo-absent-thumbs \
  cleanup-on-remove
# mo_permanent FUNCTION KIND: an event of KIND for a bucket moto does not have fails as
# permanent (exit 1), naming the bucket; not a skip of an object "no longer there".
mo_permanent() {
  local code=0
  mo_s3 event "$2" mo-absent lake.jpg >"$mo_dir/absent.json"
  mo_fn 'SOURCE_BUCKETS=*' CLEANUP_TARGETS=derivatives "$1" invoke "$mo_dir/absent.json" || code=$?
  [ "$code" = 1 ] && grep -q '^permanent.*"mo-absent" does not exist' "$mo_dir/out" ||
    { log "exit $code"; mo_said; return 1; }
}
check "thumbnail-on-create: a created event naming a missing bucket is a permanent failure" \
  mo_permanent thumbnail-on-create created
check "cleanup-on-remove: a removed event naming a missing bucket is a permanent failure" \
  mo_permanent cleanup-on-remove removed

# --- Conditional writes: forward-to-stream's checkpoint (leases by If-None-Match / If-Match).
# A proxy in front of moto that drops both headers, as a store that ignores them would.
cat >"$mo_dir/drop_conditions.py" <<'PY'
import http.client, http.server, sys

port, upstream = int(sys.argv[1]), sys.argv[2]
DROPPED = {"if-none-match", "if-match", "connection", "transfer-encoding"}


class Proxy(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def body(self):
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    break
                chunks.append(chunk)
            return b"".join(chunks)
        return self.rfile.read(int(self.headers.get("content-length", 0)))

    def forward(self):
        body = self.body()
        headers = {k: v for k, v in self.headers.items() if k.lower() not in DROPPED}
        if body or "content-length" in {k.lower() for k in headers}:
            headers["Content-Length"] = str(len(body))
        connection = http.client.HTTPConnection(upstream)
        connection.request(self.command, self.path, body=body, headers=headers)
        answer = connection.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for name, value in answer.getheaders():
            if name.lower() not in DROPPED | {"content-length"}:
                self.send_header(name, value)
        # A HEAD answer keeps the object's length and has no body.
        length = answer.getheader("content-length") if self.command == "HEAD" else len(data)
        self.send_header("Content-Length", str(length or 0))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = forward


http.server.ThreadingHTTPServer(("127.0.0.1", port), Proxy).serve_forever()
PY
mo_proxy_port=$(free_port)
python "$mo_dir/drop_conditions.py" "$mo_proxy_port" "${moto_url#http://}" >"$mo_dir/proxy.log" 2>&1 &
on_exit "kill $!"
wait_port "$mo_proxy_port"

for mo_bucket in mo-logs mo-logs-unconditional; do
  mo_s3 mkbucket "$mo_bucket"
  for mo_key in app/1.log app/2.log app/3.log; do mo_s3 put-text "$mo_bucket" "$mo_key" "line of $mo_key"; done
done
mo_forward=(FORWARD_SINK=file FORWARD_FILE="$mo_dir/claims.jsonl")
mo_checkpoints_hold() {
  mo_fn "${mo_forward[@]}" SOURCE_BUCKETS=mo-logs forward-to-stream sweep --bucket mo-logs &&
    grep -q '3 done, [0-9]* skipped, 0 failed; finished' "$mo_dir/out" || { mo_said; return 1; }
  mo_s3 body mo-logs .forward-to-stream/sweep.json | python3 -c '
import json, sys
checkpoint = json.load(sys.stdin)
assert checkpoint["status"] == "finished" and checkpoint["lease"] is None, checkpoint' &&
    python3 - "$mo_dir/claims.jsonl" <<'PY'
import json, sys
keys = sorted(json.loads(json.loads(line)["body"])["key"] for line in open(sys.argv[1]))
assert keys == ["app/1.log", "app/2.log", "app/3.log"], keys
PY
}
check "forward-to-stream sweep on moto: the checkpoint's conditional writes work, each log claimed once" \
  mo_checkpoints_hold
mo_unconditional_store_refused() {
  local code=0 claims_before
  S3_URL="http://127.0.0.1:$mo_proxy_port" python "$mo_dir/s3.py" ignores-conditions mo-logs-unconditional ||
    return 1
  claims_before=$(wc -l <"$mo_dir/claims.jsonl")
  mo_fn "${mo_forward[@]}" SOURCE_BUCKETS=mo-logs-unconditional \
    AWS_ENDPOINT_URL_S3="http://127.0.0.1:$mo_proxy_port" \
    forward-to-stream sweep --bucket mo-logs-unconditional || code=$?
  # Refused at start-up (exit 2) or as the sweep's permanent failure (exit 1), by name.
  [ "$code" != 0 ] && grep -qi 'If-None-Match' "$mo_dir/out" "$mo_dir/err" ||
    { log "exit $code"; mo_said; return 1; }
  [ "$(wc -l <"$mo_dir/claims.jsonl")" = "$claims_before" ] ||
    { log "claims were forwarded from a store that ignores conditions"; return 1; }
}
check "forward-to-stream sweep behind a proxy dropping If-None-Match/If-Match: refused, naming the capability" \
  mo_unconditional_store_refused
