# `consume` against a real RabbitMQ: forward-to-stream takes S3 event records from a queue that
# has a dead-letter exchange (as an operator sets it up, with pika), in front of an S3 server
# (s3s-fs), and writes its claim checks to a file. A good event is acked and claimed once; one
# that does not decode and one for a bucket it does not serve are dead-lettered (in the DLX's
# queue, untouched); one whose store is down at first waits in the retry queue and is done
# when it comes back; a message that keeps failing is dead-lettered after CONSUME_MAX_ATTEMPTS;
# SIGTERM with messages in flight (their store stalls) hands them back unacked; a broker
# restart mid-stream loses nothing and acks nothing early; a missing queue and a mismatched
# exchange stop the start naming them; /healthz, /events/stats and /metrics answer while consuming. Last,
# sidecar-on-create consumes an event from the same broker (AMQP_URL for both) and its
# file-transfer request carries the message's correlation id.
# Sourced by scripts/e2e.sh. Cold: rabbitmq-server from apt (about 25 s), pika from PyPI,
# s3s-fs from crates.io (about 3 min, once, cached).

need_apt rabbitmq-server
need_venv pika
need_cargo_bin s3s-fs s3s-fs 0.14.1 --features binary

con_dir=$(mktemp -d)
on_exit "rm -rf '$con_dir'"

# --- RabbitMQ: its own node, ports and state.
start_loopback_rabbitmq con consume

# The broker's side, with pika: the topology an operator declares, publishing, what the queues
# hold.
cat >"$con_dir/broker.py" <<'PY'
import json, sys
import pika

url, command, *args = sys.argv[1:]
channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
if command == "topology":
    # The events queue dead-letters to a fanout exchange whose queue keeps what failed.
    channel.exchange_declare("events.dlx", exchange_type="fanout", durable=True)
    channel.queue_declare("events.dead", durable=True)
    channel.queue_bind("events.dead", "events.dlx")
    channel.queue_declare("events", durable=True,
                          arguments={"x-dead-letter-exchange": "events.dlx"})
    # An exchange of a type consume's durable declaration would contradict.
    channel.exchange_declare("s3-fanout", exchange_type="fanout", durable=True)
    # Where sidecar-on-create's file-transfer requests go (by the default exchange).
    channel.queue_declare("filetransfer", durable=True)
elif command == "publish":
    # publish FILE CORRELATION_ID...: persistent, as a gateway publishes, confirmed.
    channel.confirm_delivery()
    for path, correlation_id in zip(args[::2], args[1::2]):
        channel.basic_publish("", "events", open(path, "rb").read(), pika.BasicProperties(
            delivery_mode=2, content_type="application/json", correlation_id=correlation_id))
elif command == "take":
    # Every message of queue args[0], as JSON lines (body, correlation id, death reasons).
    while True:
        method, props, body = channel.basic_get(args[0], auto_ack=True)
        if method is None:
            break
        deaths = [d.get("reason") for d in (props.headers or {}).get("x-death", [])]
        print(json.dumps({"body": body.decode("utf-8", "replace"),
                          "correlation_id": props.correlation_id, "deaths": deaths}))
PY
con_broker() { python "$con_dir/broker.py" "$con_amqp_url" "$@"; }
con_broker topology

# con_counts QUEUE: "ready unacked" of QUEUE.
con_counts() {
  rabbitmqctl -n "$con_node" -q list_queues name messages_ready messages_unacknowledged |
    awk -v q="$1" '$1 == q { print $2, $3 }'
}
# con_wait_counts QUEUE "READY UNACKED" [SECONDS]: waits until QUEUE holds that.
con_wait_counts() {
  local deadline=$((SECONDS + ${3:-30})) now
  while now=$(con_counts "$1"); [ "$now" != "$2" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "queue $1 holds $now (ready unacked), expected $2"
      return 1
    fi
    sleep 0.3
  done
}

# --- The S3 server, on a port fixed now but started later (the store is down at first).
con_s3_port=$(free_port)
con_key=bucketfn-e2e-access
con_secret=bucketfn-e2e-secret
mkdir -p "$con_dir/s3"
con_s3="http://127.0.0.1:$con_s3_port"
con_start_s3() {
  s3s-fs --host 127.0.0.1 --port "$con_s3_port" --access-key "$con_key" \
    --secret-key "$con_secret" "$con_dir/s3" >>"$con_dir/s3s.log" 2>&1 &
  con_s3_pid=$!
  on_exit "kill $con_s3_pid"
  wait_port "$con_s3_port"
}
# con_put KEY: an object in bucket media.
con_put() {
  local code
  code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "$con_s3/media/$1" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$con_key:$con_secret" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' --data-binary "content of $1")
  [ "$code" = 200 ] || { log "S3 PUT media/$1: HTTP $code"; return 1; }
}

# A stall: accepts connections and never answers, so that events using it stay in flight.
con_stall_port=$(free_port)
python3 -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(64)
held = []
while True:
    held.append(s.accept()[0])' "$con_stall_port" &
on_exit "kill $!"
wait_port "$con_stall_port"

# A slow store: every request to S3 waits 300 ms, so that a burst of events is still in flight
# seconds later.
con_slow_port=$(free_port)
python3 -c '
import asyncio, sys
async def pipe(reader, writer, delay):
    try:
        while data := await reader.read(65536):
            await asyncio.sleep(delay)
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()
async def serve(client_reader, client_writer):
    try:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", int(sys.argv[2]))
    except OSError:
        client_writer.close()
        return
    await asyncio.gather(pipe(client_reader, server_writer, 0.3),
                         pipe(server_reader, client_writer, 0), return_exceptions=True)
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())' "$con_slow_port" "$con_s3_port" &
on_exit "kill $!"
wait_port "$con_slow_port"

# con_event NAME BUCKET KEY: an S3 created record for BUCKET/KEY in $con_dir/NAME.json.
con_event() {
  python3 - "$E2E_REPO/events/aws-s3/created.json" "$2" "$3" >"$con_dir/$1.json" <<'PY'
import json, sys, urllib.parse
event = json.load(open(sys.argv[1]))
record = event["Records"][0]
record["s3"]["bucket"]["name"] = sys.argv[2]
record["s3"]["object"]["key"] = urllib.parse.quote_plus(sys.argv[3])
print(json.dumps(event))
PY
}
# con_send NAME BUCKET KEY: publishes that event with correlation id corr-NAME.
con_send() { con_event "$1" "$2" "$3" && con_broker publish "$con_dir/$1.json" "corr-$1"; }

# --- The consumer: forward-to-stream, claims to a file.
con_claims="$con_dir/claims.jsonl"
con_http_port=$(free_port)
con_ops_token=bucketfn-e2e-ops-token
# con_start LOG [VAR=VALUE...]: starts `forward-to-stream consume`; sets con_pid.
con_start() {
  local logfile=$1
  shift
  env AWS_ENDPOINT_URL_S3="$con_s3" AWS_ACCESS_KEY_ID="$con_key" \
    AWS_SECRET_ACCESS_KEY="$con_secret" AWS_REGION=us-east-1 S3_MAX_ATTEMPTS=1 \
    SOURCE_BUCKETS=media FORWARD_SINK=file FORWARD_FILE="$con_claims" \
    CONSUME_AMQP_URL="$con_amqp_url" CONSUME_QUEUE=events CONSUME_RETRY_DELAY_SECS=2 \
    CONSUME_MAX_ATTEMPTS=4 CONSUME_SHUTDOWN_SECS=2 BATCH_CONCURRENCY=4 \
    PORT="$con_http_port" OPS_TOKEN="$con_ops_token" LISTEN_ADDRESS=127.0.0.1 \
    "$@" "$BUCKETFN_BIN/forward-to-stream" consume >"$logfile" 2>&1 &
  con_pid=$!
  on_exit "kill $con_pid"
}
# con_claimed KEY: how many claims name media/KEY.
con_claimed() {
  [ -f "$con_claims" ] || { echo 0; return; }
  python3 - "$con_claims" "media/$1" <<'PY'
import json, sys
print(sum(1 for line in open(sys.argv[1]) if json.loads(line)["key"] == sys.argv[2]))
PY
}
# con_wait_claimed KEY COUNT [SECONDS]
con_wait_claimed() {
  local deadline=$((SECONDS + ${3:-30}))
  until [ "$(con_claimed "$1")" = "$2" ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "media/$1 claimed $(con_claimed "$1") times, expected $2"
      return 1
    fi
    sleep 0.3
  done
}
# con_stop: SIGTERM to the consumer; its exit status in con_status.
con_stop() {
  kill -TERM "$con_pid"
  con_status=0
  wait "$con_pid" || con_status=$?
}

# --- Start-up refusals: a missing queue, an exchange of another type.
con_refused() {
  local logfile=$1 want=$2 status=0
  shift 2
  con_start "$logfile" "$@"
  wait "$con_pid" || status=$?
  [ "$status" = 2 ] || { log "exit status $status, expected 2: $(tail -3 "$logfile")"; return 1; }
  grep -qF -- "$want" "$logfile" || { log "no '$want' in: $(tail -3 "$logfile")"; return 1; }
}
check "consume: a queue that does not exist stops the start, naming it" \
  con_refused "$con_dir/missing.log" 'queue "nowhere" (CONSUME_QUEUE)' CONSUME_QUEUE=nowhere
check "consume: an exchange declared otherwise stops the start, naming it" \
  con_refused "$con_dir/mismatch.log" 'exchange "s3-fanout" (CONSUME_EXCHANGE)' \
  CONSUME_DECLARE=create CONSUME_DEAD_LETTER_EXCHANGE=events.dlx CONSUME_EXCHANGE=s3-fanout \
  CONSUME_BINDING_KEY='#' CONSUME_EXCHANGE_TYPE=topic
check "consume: a durable declaration with another dead-letter exchange is refused, naming it" \
  con_refused "$con_dir/other-dlx.log" 'queue "events" (CONSUME_QUEUE)' \
  CONSUME_DECLARE=create CONSUME_DEAD_LETTER_EXCHANGE=s3-fanout

# --- The store down at first: the event is retried until it is back, then done once.
con_start "$con_dir/run1.log"
wait_log "$con_dir/run1.log" 'Consuming.'
con_send early media early.txt
con_retried_then_done() {
  wait_log "$con_dir/run1.log" 'it will be delivered again' || return 1
  [ "$(con_claimed early.txt)" = 0 ] || { log "claimed while the store was down"; return 1; }
  con_start_s3
  con_put early.txt || return 1
  con_wait_claimed early.txt 1 30 || return 1
  con_wait_counts events "0 0" && con_wait_counts events.retry "0 0"
}
check "consume: a retryable event waits in the retry queue and is done once the store is back" \
  con_retried_then_done

# --- Good, undecodable and foreign events.
con_put good.txt
con_send good media good.txt
printf 'not json at all' >"$con_dir/garbage.json"
con_broker publish "$con_dir/garbage.json" corr-garbage
con_send foreign elsewhere foreign.txt
con_sorted() {
  con_wait_claimed good.txt 1 || return 1
  con_wait_counts events.dead "2 0" || return 1
  con_wait_counts events "0 0" || return 1
  con_broker take events.dead >"$con_dir/dead.jsonl"
  python3 - "$con_dir/dead.jsonl" <<'PY'
import json, sys
dead = {m["correlation_id"]: m for m in map(json.loads, open(sys.argv[1]))}
assert set(dead) == {"corr-garbage", "corr-foreign"}, dead
assert dead["corr-garbage"]["body"] == "not json at all", dead
assert all(m["deaths"] == ["rejected"] for m in dead.values()), dead
PY
}
check "consume: a good event is acked and claimed once; bad and foreign ones are dead-lettered as sent" \
  con_sorted

# --- The same event again.
con_repeat() {
  con_broker publish "$con_dir/early.json" corr-again
  con_wait_claimed early.txt 1 || return 1
  con_wait_counts events "0 0" || return 1
  [ "$(con_counts events.dead)" = "0 0" ]
}
check "consume: a repeated event finds its claim and sends nothing again" con_repeat

con_ops() {
  local stats health
  health=$(curl -s "http://127.0.0.1:$con_http_port/healthz")
  [ "$health" = ok ] || { log "/healthz: $health"; return 1; }
  stats=$(curl -s -H "Authorization: Bearer $con_ops_token" \
    "http://127.0.0.1:$con_http_port/events/stats")
  python3 - "$stats" <<'PY' || { log "/events/stats: $stats"; return 1; }
import json, sys
stats = json.dumps(json.loads(sys.argv[1]))
assert "completed" in stats and "retryable" in stats, stats
PY
  curl -s -H "Authorization: Bearer $con_ops_token" \
    "http://127.0.0.1:$con_http_port/events/history" | grep -qF 'good.txt' || return 1
  curl -s -H "Authorization: Bearer $con_ops_token" \
    "http://127.0.0.1:$con_http_port/metrics" | grep -qF 'bucketfn_messages_total{settlement="ack"}'
}
check "consume: /healthz, /events/stats, /events/history and /metrics answer while consuming" con_ops
con_stop
check "consume: SIGTERM with nothing in flight ends cleanly" test "$con_status" = 0

# --- Exhausted retries: the store stalls past the attempt timeout for every delivery.
con_start "$con_dir/run2.log" AWS_ENDPOINT_URL_S3="http://127.0.0.1:$con_stall_port" \
  S3_ATTEMPT_TIMEOUT_SECS=1 CONSUME_RETRY_DELAY_SECS=1 CONSUME_MAX_ATTEMPTS=2
wait_log "$con_dir/run2.log" 'Consuming.'
con_put doomed.txt
con_send doomed media doomed.txt
con_exhausted() {
  con_wait_counts events.dead "1 0" 40 || return 1
  grep -qF 'still failing after 2 attempts (CONSUME_MAX_ATTEMPTS is 2)' "$con_dir/run2.log" ||
    { log "no give-up reason in the log"; return 1; }
  con_broker take events.dead | grep -qF '"corr-doomed"'
}
check "consume: a message still retryable after CONSUME_MAX_ATTEMPTS is dead-lettered" con_exhausted
con_stop

# --- SIGTERM with messages in flight: the store stalls; they go back to the queue unacked.
con_start "$con_dir/run3.log" AWS_ENDPOINT_URL_S3="http://127.0.0.1:$con_stall_port" \
  S3_ATTEMPT_TIMEOUT_SECS=120
wait_log "$con_dir/run3.log" 'Consuming.'
for n in 1 2 3; do
  con_put "inflight-$n.txt"
  con_send "inflight-$n" media "inflight-$n.txt"
done
con_handed_back() {
  con_wait_counts events "0 3" || return 1
  local began=$SECONDS
  con_stop
  [ "$con_status" = 0 ] || { log "exit status $con_status"; return 1; }
  [ $((SECONDS - began)) -le 15 ] || { log "shutdown took $((SECONDS - began)) s"; return 1; }
  grep -qF 'handed back to the queue' "$con_dir/run3.log" || return 1
  con_wait_counts events "3 0" 10 || return 1
  [ "$(con_counts events.retry)" = "0 0" ] && [ "$(con_counts events.dead)" = "0 0" ]
}
check "consume: SIGTERM hands messages in flight back to the queue, none acked" con_handed_back

# --- A broker restart mid-stream: nothing lost, nothing acked early.
con_start "$con_dir/run4.log" BATCH_CONCURRENCY=2 \
  AWS_ENDPOINT_URL_S3="http://127.0.0.1:$con_slow_port"
con_restart_loses_nothing() {
  con_wait_claimed inflight-3.txt 1 30 || return 1
  local n burst=()
  for n in $(seq 1 30); do
    con_put "burst-$n.txt" || return 1
    con_event "burst-$n" media "burst-$n.txt"
    burst+=("$con_dir/burst-$n.json" "corr-burst-$n")
  done
  con_broker publish "${burst[@]}"
  sleep 2
  # Mid-stream: some claimed, some in flight, some still queued.
  [ "$(con_counts events)" != "0 0" ] || { log "the burst was over before the restart"; return 1; }
  rabbitmqctl -n "$con_node" -q stop_app >/dev/null
  sleep 1
  rabbitmqctl -n "$con_node" -q start_app >/dev/null
  rabbitmqctl -n "$con_node" -q await_startup >/dev/null
  wait_log "$con_dir/run4.log" 'Lost the broker' 5 ||
    wait_log "$con_dir/run4.log" 'subscription ended' 5 || return 1
  for n in 1 2 3; do con_wait_claimed "inflight-$n.txt" 1 5 || return 1; done
  for n in $(seq 1 30); do con_wait_claimed "burst-$n.txt" 1 60 || return 1; done
  con_wait_counts events "0 0" 30 || return 1
  [ "$(con_counts events.dead)" = "0 0" ]
}
check "consume: a broker restart mid-stream loses no message and acks none early" \
  con_restart_loses_nothing
con_stop

# --- sidecar-on-create: the correlation id of the message reaches its file-transfer request.
con_api_port=$(free_port)
con_ftp_port=$(free_port)
mkdir -p "$con_dir/ftp/VRT/DISK-SHARE-EVENTS" "$con_dir/storage/media-uploads/photos/2024"
"$BUCKETFN_BIN/archive-stubs" --http "127.0.0.1:$con_api_port" --ftp-port "$con_ftp_port" \
  --ftp-root "$con_dir/ftp" --organisation OR-rf5kf25=VRT >"$con_dir/stubs.log" 2>&1 &
on_exit "kill $!"
wait_port "$con_api_port"
wait_port "$con_ftp_port"
con_api="http://127.0.0.1:$con_api_port"
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$con_dir/storage/media-uploads/photos/2024/sidecar.jpg"
con_event sidecar media-uploads photos/2024/sidecar.jpg
env RUST_LOG=info MEDIAHAVEN_URL="$con_api" MEDIAHAVEN_CLIENT_ID=bucketfn-client \
  MEDIAHAVEN_CLIENT_SECRET=client-secret-value MEDIAHAVEN_USERNAME=archivist \
  MEDIAHAVEN_PASSWORD=archivist-password PID_SERVICE_URL="$con_api/pid" \
  ORGANISATIONS_API_URL="$con_api/organisations" TENANT_BY_BUCKET=media-uploads=OR-rf5kf25 \
  S3_DOMAIN=s3.archive.example FTP_HOST="127.0.0.1:$con_ftp_port" FTP_USER=tra \
  FTP_PASSWORD=tra-password AMQP_URL="$con_amqp_url" AMQP_ROUTING_KEY=filetransfer \
  CONSUME_QUEUE=events PORT="$con_http_port" LISTEN_ADDRESS=127.0.0.1 \
  "$BUCKETFN_BIN/sidecar-on-create" consume --storage "$con_dir/storage" >"$con_dir/sidecar.log" 2>&1 &
con_pid=$!
on_exit "kill $con_pid"
con_sidecar_carries_correlation_id() {
  wait_log "$con_dir/sidecar.log" 'Consuming.' || return 1
  con_broker publish "$con_dir/sidecar.json" corr-sidecar-42 || return 1
  con_wait_counts filetransfer "1 0" 30 || return 1
  con_wait_counts events "0 0" || return 1
  con_broker take filetransfer >"$con_dir/filetransfer.jsonl"
  python3 - "$con_dir/filetransfer.jsonl" <<'PY'
import json, sys
[message] = map(json.loads, open(sys.argv[1]))
assert message["correlation_id"] == "corr-sidecar-42", message
assert json.loads(message["body"])["source"]["object"]["key"] == "photos/2024/sidecar.jpg", message
PY
}
check "consume: sidecar-on-create's file-transfer request carries the message's correlation id" \
  con_sidecar_carries_correlation_id
con_stop
