# forward-to-stream against a real Kafka-compatible broker (tansu, in-memory storage), read back
# with a standard client (kafka-python) and compared: a claim check from the command line, log
# records from the HTTP service, and a broker restart in the middle of the service's life
# (events while the broker is down are answered retryable; the redelivery after the restart is
# published by the same process). Sourced by scripts/e2e.sh.
# Cold cost: tansu from crates.io (about 13 min on 2 cores, once, cached) and kafka-python.

need_cargo_bin tansu tansu 0.6.0 --features dynostore
need_venv "kafka-python==3.0.12"

kafka_dir=$(mktemp -d)
on_exit "rm -rf '$kafka_dir'"
kafka_port=$(free_port)
export KAFKA_BROKERS="127.0.0.1:$kafka_port"

start_broker() { start_tansu "$kafka_port" "$kafka_dir/tansu.log"; }
start_broker
# Single quotes: the clean-up stops whichever broker runs at the end.
on_exit 'kill "$tansu_pid"'
kafka() { kafka_tool "$KAFKA_BROKERS" "$@"; }
kafka create objects records

# The bucket: a text flow log, and an IBM-style JSON flow log, gzipped.
storage="$kafka_dir/storage"
mkdir -p "$storage/logs/vpc" "$storage/logs/flows"
for n in $(seq 1 200); do
  echo "2 123456789010 eni-$n 10.0.1.5 10.0.0.220 39812 80 6 20 4249 1418530010 1418530070 ACCEPT OK"
done >"$storage/logs/vpc/a.log"
python - "$storage/logs/flows/b.json.gz" <<'PY'
import gzip, json, sys
doc = {"version": "0.0.1", "number_of_flow_logs": 5,
       "flow_logs": [{"initiator_ip": "10.0.0.%d" % n, "action": "accepted"} for n in range(5)]}
with gzip.open(sys.argv[1], "wt") as f:
    json.dump(doc, f, indent=2)
PY
notification() {
  printf '{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","eventTime":"2024-11-05T14:22:31.493Z","s3":{"bucket":{"name":"logs"},"object":{"key":"%s","size":1,"eTag":"e2e"}}}]}' "$1"
}
forward() { env KAFKA_TIMEOUT_SECS=5 RUST_LOG=warn "$@"; }

# 1. A claim check from the command line, read back.
notification "vpc/a.log" >"$kafka_dir/created.json"
check "claim check published from the command line" \
  forward KAFKA_TOPIC=objects "$BUCKETFN_BIN/forward-to-stream" invoke "$kafka_dir/created.json" --storage "$storage"
claim_matches() {
  kafka consume objects 1 >"$kafka_dir/objects.jsonl"
  python - "$kafka_dir/objects.jsonl" "$(stat -c %s "$storage/logs/vpc/a.log")" <<'PY'
import json, sys
[message] = [json.loads(line) for line in open(sys.argv[1])]
data = json.loads(message["value"])
h = message["headers"]
assert message["key"] == "logs/vpc/a.log", message
assert h["ce_specversion"] == "1.0" and h["ce_type"] == "io.bucketfn.object.created", h
assert h["ce_source"] == "s3://logs" and h["ce_subject"] == "vpc/a.log", h
assert h["content-type"] == "application/json" and len(h["ce_id"]) == 32, h
# The event said etag "e2e" and size 1: the claim carries the store's values.
assert data["uri"] == "s3://logs/vpc/a.log" and data["etag"] not in ("", "e2e"), data
assert data["size"] == int(sys.argv[2]), data
PY
}
check "the claim read back is a binary-mode CloudEvent keyed by the object" claim_matches

# 2. Content mode through the HTTP service.
service_port=$(free_port)
# Started through env (which execs), not a shell function, so that $! is the service itself.
# The service is on loopback and nothing else posts to it: no delivery check (45-attacks.sh
# is where deliveries are attacked).
env KAFKA_TIMEOUT_SECS=5 KAFKA_TOPIC=records FORWARD_MODE=content PORT="$service_port" \
  LISTEN_ADDRESS=127.0.0.1 EVENT_AUTH=none \
  LOG_FORMAT=json "$BUCKETFN_BIN/forward-to-stream" serve --storage "$storage" \
  >"$kafka_dir/service.log" 2>&1 &
service_pid=$!
on_exit "kill $service_pid"
wait_port "$service_port" 30
post() {
  curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary "$(notification "$1")" "http://127.0.0.1:$service_port/"
}
expect_status() { [ "$(post "$2")" = "$1" ]; }
check "the service forwards the 200 lines of a text log" expect_status 202 vpc/a.log
records_match() {
  # $1: how many records, $2: the object key, $3: a file of the expected record bodies.
  kafka consume records "$1" >"$kafka_dir/records.jsonl"
  python - "$kafka_dir/records.jsonl" "$1" "$2" "$3" <<'PY'
import json, sys
records = [json.loads(line) for line in open(sys.argv[1])]
count, key, expected = int(sys.argv[2]), sys.argv[3], [l.rstrip("\n") for l in open(sys.argv[4])]
mine = [r for r in records if r["key"] == "logs/" + key]
assert len(mine) == count == len(expected), (len(mine), count, len(expected))
assert len({r["partition"] for r in mine}) == 1, "one object's records share a partition"
etag = mine[0]["headers"]["dedupe_id"].rsplit(":", 1)[0]
for n, (record, body) in enumerate(zip(mine, expected)):
    assert record["headers"]["dedupe_id"] == "%s:%d" % (etag, n), record
    assert json.loads(record["value"]) == json.loads(body) if body.startswith("{") else record["value"] == body, (record, body)
PY
}
check "the 200 records read back match the file, in order, with dedupe ids" \
  records_match 200 vpc/a.log "$storage/logs/vpc/a.log"

# 3. The broker goes away in the middle; the running service answers retryable.
kill "$tansu_pid"
wait "$tansu_pid" 2>/dev/null || true
check "an event while the broker is down is answered 503 (retryable)" expect_status 503 flows/b.json.gz
start_broker
# In-memory storage starts empty: the topics come back, the records published before do not.
kafka create objects records
check "the redelivered event is published after the broker restart" expect_status 202 flows/b.json.gz
python - "$storage/logs/flows/b.json.gz" >"$kafka_dir/flows.expected" <<'PY'
import gzip, json, sys
for record in json.load(gzip.open(sys.argv[1], "rt"))["flow_logs"]:
    print(json.dumps(record))
PY
check "the flow records read back after the restart match the JSON file's flow_logs" \
  records_match 5 flows/b.json.gz "$kafka_dir/flows.expected"
