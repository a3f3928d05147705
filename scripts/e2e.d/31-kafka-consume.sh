# `consume` from a real Kafka-compatible broker (tansu) as a consumer group: forward-to-stream
# takes MinIO-shaped bucket notifications (keyed by bucket/object, as MinIO's Kafka target
# sends them) from topic bucket-events on one broker, reads the objects from a local folder,
# and publishes claim checks to a second broker, which is down at first. Checked: topics that
# do not exist stop the start naming them; an event whose sink is down is retried (its
# partition paused) and done once the sink is up; a burst over three partitions is claimed
# once each; a message that does not decode and one for a foreign bucket are copied to the
# dead-letter topic with their reason; the group's committed offsets cover every message once
# all settled; after SIGTERM and a restart only what came meanwhile is handled; a message
# still failing after CONSUME_MAX_ATTEMPTS goes to the dead-letter topic; a crash (SIGKILL)
# with messages in retry has committed nothing for them, and the restart handles them all.
# Not here: the events broker restarting under the consumer (tansu's memory storage restarts
# empty, and on a restarted tansu no consumer group, ours or a fresh one, was handed messages).
# Sourced by scripts/e2e.sh. Cold: tansu from crates.io (see 30-kafka.sh), kafka-python.

need_cargo_bin tansu tansu 0.6.0 --features dynostore
need_venv "kafka-python==3.0.12"

kc_dir=$(mktemp -d)
on_exit "rm -rf '$kc_dir'"

# The events broker, and the sink broker (started later).
kc_events_port=$(steady_port)
kc_sink_port=$(steady_port)
kc_events="127.0.0.1:$kc_events_port"
kc_sink="127.0.0.1:$kc_sink_port"
start_tansu "$kc_events_port" "$kc_dir/events-broker.log"
kc_events_pid=$tansu_pid
# Single quotes: the clean-up stops whichever events broker runs at the end.
on_exit 'kill "$kc_events_pid"'
kafka_tool "$kc_events" create bucket-events:3 bucket-events.dead-letter:1

# The bucket: a folder of small objects.
mkdir -p "$kc_dir/storage/media"
# kc_object KEY: an object media/KEY.
kc_object() { printf 'content of %s\n' "$1" >"$kc_dir/storage/media/$1"; }
# kc_notify BUCKET KEY...: a MinIO notification per key, published keyed by BUCKET/KEY.
kc_notify() {
  python3 - "$E2E_REPO/events/minio/created-webhook.json" "$@" <<'PY' |
import json, sys, urllib.parse
template, bucket, keys = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[3:]
for key in keys:
    event = json.loads(json.dumps(template))
    event["Key"] = bucket + "/" + key
    record = event["Records"][0]
    record["s3"]["bucket"]["name"] = bucket
    record["s3"]["object"]["key"] = urllib.parse.quote(key)
    print(json.dumps({"key": event["Key"], "value": json.dumps(event)}))
PY
    kafka_tool "$kc_events" publish bucket-events
}

kc_http_port=$(free_port)
kc_ops_token=bucketfn-e2e-ops-token
# kc_start LOG [VAR=VALUE...]: starts `forward-to-stream consume`; sets kc_pid.
kc_start() {
  local logfile=$1
  shift
  env SOURCE_BUCKETS=media KAFKA_BROKERS="$kc_sink" KAFKA_TOPIC=objects KAFKA_TIMEOUT_SECS=2 \
    CONSUME_KAFKA_BROKERS="$kc_events" CONSUME_TOPIC=bucket-events CONSUME_GROUP=forward \
    CONSUME_RETRY_DELAY_SECS=1 CONSUME_MAX_ATTEMPTS=30 CONSUME_SHUTDOWN_SECS=5 \
    BATCH_CONCURRENCY=4 PORT="$kc_http_port" OPS_TOKEN="$kc_ops_token" LISTEN_ADDRESS=127.0.0.1 \
    "$@" "$BUCKETFN_BIN/forward-to-stream" consume --storage "$kc_dir/storage" \
    >"$logfile" 2>&1 &
  kc_pid=$!
  on_exit "kill $kc_pid"
}
kc_stop() {
  kill -TERM "$kc_pid"
  kc_status=0
  wait "$kc_pid" || kc_status=$?
}
# kc_claims COUNT: waits until topic objects holds COUNT claims, into $kc_dir/claims.jsonl.
kc_claims() {
  local deadline=$((SECONDS + 40)) n
  while kafka_tool "$kc_sink" consume objects "$1" >"$kc_dir/claims.jsonl"; do
    n=$(wc -l <"$kc_dir/claims.jsonl")
    [ "$n" -ge "$1" ] && break
    [ "$SECONDS" -lt "$deadline" ] || { log "objects holds $n claims, expected $1"; return 1; }
  done
  [ "$(wc -l <"$kc_dir/claims.jsonl")" = "$1" ] ||
    { log "objects holds $(wc -l <"$kc_dir/claims.jsonl") claims, expected $1"; return 1; }
}
# kc_claimed_once KEY...: each of media/KEY has exactly one claim.
kc_claimed_once() {
  python3 - "$kc_dir/claims.jsonl" "$@" <<'PY'
import collections, json, sys
counts = collections.Counter(json.loads(line)["key"] for line in open(sys.argv[1]))
for key in sys.argv[2:]:
    assert counts["media/" + key] == 1, (key, counts["media/" + key])
PY
}
# kc_committed COUNT [GROUP]: waits until the group's (forward's unless named) committed
# offsets add up to COUNT.
kc_committed() {
  local deadline=$((SECONDS + 30)) now
  until now=$(kafka_tool "$kc_events" committed "${2:-forward}" bucket-events) && [ "$now" = "$1" ]; do
    [ "$SECONDS" -lt "$deadline" ] || { log "committed offsets add up to $now, expected $1"; return 1; }
    sleep 0.5
  done
}

# --- Start-up refusals.
kc_refused() {
  local logfile=$1 want=$2 status=0
  shift 2
  kc_start "$logfile" "$@"
  wait "$kc_pid" || status=$?
  [ "$status" = 2 ] || { log "exit status $status, expected 2: $(tail -3 "$logfile")"; return 1; }
  grep -qF -- "$want" "$logfile" || { log "no '$want' in: $(tail -3 "$logfile")"; return 1; }
}
check "consume (Kafka): a topic that does not exist stops the start, naming it" \
  kc_refused "$kc_dir/missing.log" 'topic "nowhere" (CONSUME_TOPIC)' CONSUME_TOPIC=nowhere
check "consume (Kafka): a dead-letter topic that does not exist stops the start, naming it" \
  kc_refused "$kc_dir/missing-dlt.log" 'topic "nope" (CONSUME_DEAD_LETTER_TOPIC)' \
  CONSUME_DEAD_LETTER_TOPIC=nope

# --- The sink down at first: retried until it is up, then claimed once.
kc_start "$kc_dir/run1.log"
wait_log "$kc_dir/run1.log" 'Consuming.'
kc_object early.txt
kc_notify media early.txt
kc_retried_then_done() {
  wait_log "$kc_dir/run1.log" 'it will be delivered again' || return 1
  start_tansu "$kc_sink_port" "$kc_dir/sink-broker.log" || return 1
  kc_sink_pid=$tansu_pid
  on_exit "kill $kc_sink_pid"
  kafka_tool "$kc_sink" create objects:3 || return 1
  kc_claims 1 && kc_claimed_once early.txt
}
check "consume (Kafka): an event whose sink is down is retried and claimed once the sink is up" \
  kc_retried_then_done

# --- A burst over the partitions, one key several times, a bad and a foreign message.
burst=()
for n in $(seq 1 30); do
  kc_object "burst-$n.txt"
  burst+=("burst-$n.txt")
done
kc_notify media "${burst[@]}" early.txt early.txt
printf '%s\n' '{"key": "media/garbage", "value": "not json at all"}' |
  kafka_tool "$kc_events" publish bucket-events
kc_notify elsewhere foreign.txt
kc_sorted() {
  kc_claims 31 || return 1
  kc_claimed_once early.txt "${burst[@]}" || return 1
  kafka_tool "$kc_events" consume bucket-events.dead-letter 2 >"$kc_dir/dead.jsonl"
  python3 - "$kc_dir/dead.jsonl" <<'PY'
import json, sys
dead = {m["key"]: m for m in map(json.loads, open(sys.argv[1]))}
assert set(dead) == {"media/garbage", "elsewhere/foreign.txt"}, dead
assert dead["media/garbage"]["value"] == "not json at all", dead
for m in dead.values():
    assert m["headers"]["x-bucketfn-reason"], m
    assert m["headers"]["x-bucketfn-origin"].startswith("bucket-events/"), m
assert "elsewhere" in dead["elsewhere/foreign.txt"]["headers"]["x-bucketfn-reason"], dead
PY
}
check "consume (Kafka): a burst is claimed once each; bad and foreign messages go to the dead-letter topic with their reason" \
  kc_sorted
# 1 + 30 + 2 + 1 + 1 messages.
check "consume (Kafka): once all settled, the committed offsets cover every message" \
  kc_committed 35
kc_ops() {
  [ "$(curl -s "http://127.0.0.1:$kc_http_port/healthz")" = ok ] || return 1
  curl -s -H "Authorization: Bearer $kc_ops_token" "http://127.0.0.1:$kc_http_port/metrics" |
    grep -qF 'bucketfn_messages_total{settlement="dead_letter"} 2'
}
check "consume (Kafka): /healthz and /metrics answer while consuming" kc_ops
kc_stop
check "consume (Kafka): SIGTERM ends cleanly" test "$kc_status" = 0

# --- While it is stopped, five more; after the restart only those are handled.
later=()
for n in $(seq 1 5); do
  kc_object "later-$n.txt"
  later+=("later-$n.txt")
done
kc_notify media "${later[@]}"
kc_start "$kc_dir/run2.log"
wait_log "$kc_dir/run2.log" 'Consuming.'
kc_resumed() {
  kc_claims 36 || return 1
  kc_claimed_once "${later[@]}" early.txt || return 1
  kc_committed 40 || return 1
  curl -s -H "Authorization: Bearer $kc_ops_token" "http://127.0.0.1:$kc_http_port/metrics" |
    grep -qF 'bucketfn_messages_total{settlement="ack"} 5' ||
    { log "run 2 handled more than the five new messages"; return 1; }
}
check "consume (Kafka): a restart goes on from the committed offsets, handling only what is new" \
  kc_resumed

kc_stop

# --- Exhausted retries: the sink gone for good.
kill "$kc_sink_pid"
kc_start "$kc_dir/run3.log" CONSUME_MAX_ATTEMPTS=2 KAFKA_TIMEOUT_SECS=1
wait_log "$kc_dir/run3.log" 'Consuming.'
kc_object doomed.txt
kc_notify media doomed.txt
kc_exhausted() {
  wait_log "$kc_dir/run3.log" 'still failing after 2 attempts (CONSUME_MAX_ATTEMPTS is 2)' 40 ||
    return 1
  kafka_tool "$kc_events" consume bucket-events.dead-letter 3 | grep -qF '"media/doomed.txt"' ||
    return 1
  kc_committed 41
}
check "consume (Kafka): a message still retryable after CONSUME_MAX_ATTEMPTS goes to the dead-letter topic" \
  kc_exhausted
kc_stop

# --- A crash with messages unsettled: nothing was committed for them, so after the restart
# they are all handled. The sink is still down, so the three stay in retry until the kill.
kc_start "$kc_dir/run4.log"
wait_log "$kc_dir/run4.log" 'Consuming.'
crashed=(crash-1.txt crash-2.txt crash-3.txt)
for key in "${crashed[@]}"; do kc_object "$key"; done
kc_notify media "${crashed[@]}"
kc_crash_then_done() {
  wait_log "$kc_dir/run4.log" 'it will be delivered again' || return 1
  # One retry round has passed: the offsets must still stop before the three.
  sleep 2
  kc_committed 41 || return 1
  kill -KILL "$kc_pid"
  wait "$kc_pid" 2>/dev/null
  # A new, empty sink broker: the claims it holds are the ones sent after the restart.
  start_tansu "$kc_sink_port" "$kc_dir/sink-broker-2.log" || return 1
  kc_sink_pid=$tansu_pid
  on_exit "kill $kc_sink_pid"
  kafka_tool "$kc_sink" create objects:3 || return 1
  # The restart takes over what the group committed. In a group of its own: tansu keeps the
  # killed member in the group, so a rejoin under its name can wait out the rebalance timeout
  # (max.poll.interval.ms, at least 300 s) before a partition is handed on, where Kafka drops
  # the member once its session times out (45 s).
  [ "$(kafka_tool "$kc_events" copy-offsets forward forward-restarted bucket-events)" = 41 ] ||
    return 1
  kc_start "$kc_dir/run5.log" CONSUME_GROUP=forward-restarted
  kc_claims 3 && kc_claimed_once "${crashed[@]}" && kc_committed 44 forward-restarted
}
check "consume (Kafka): after a crash (SIGKILL) with messages in retry, nothing was committed early and the restart handles them all" \
  kc_crash_then_done
kc_stop
