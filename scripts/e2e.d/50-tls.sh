# TLS wherever a URL asks for it, against real servers that listen only on TLS with the
# certificate of a throw-away CA (openssl, in a temp folder): sidecar-on-create publishes its
# file-transfer request to RabbitMQ over amqps:// (trusting AMQP_CA_FILE), forward-to-stream
# records its events in a Redis ledger over rediss:// (trusting LEDGER_CA_FILE besides the
# system store), and a client that trusts another CA fails with an error that says the
# certificate is not trusted. Read back with independent clients (pika with an SSL
# context, `redis-cli --tls`). Sourced by scripts/e2e.sh.
# Cold: rabbitmq-server, redis-server and redis-tools from apt (about 25 s), pika from PyPI.

need_apt rabbitmq-server redis-server redis-tools openssl
need_venv pika

tls_dir=$(mktemp -d)
on_exit "rm -rf '$tls_dir'"

# --- Two CAs: the servers' and one nobody should trust; a server certificate for loopback.
tls_ca() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=bucketfn e2e $1" \
    -keyout "$tls_dir/$1.key" -out "$tls_dir/$1.pem" 2>/dev/null
}
tls_ca ca
tls_ca other-ca
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
  -keyout "$tls_dir/server.key" -out "$tls_dir/server.csr" 2>/dev/null
printf 'subjectAltName = IP:127.0.0.1, DNS:localhost\nextendedKeyUsage = serverAuth\n' \
  >"$tls_dir/server.ext"
openssl x509 -req -in "$tls_dir/server.csr" -CA "$tls_dir/ca.pem" -CAkey "$tls_dir/ca.key" \
  -CAcreateserial -days 2 -extfile "$tls_dir/server.ext" -out "$tls_dir/server.pem" 2>/dev/null
# Debian's wrapper runs RabbitMQ as the rabbitmq user, which must read the key.
chmod 755 "$tls_dir"
chmod 644 "$tls_dir"/*.pem "$tls_dir/server.key"

# --- RabbitMQ with a TLS listener only, its own node and ports.
tls_amqps_port=$(free_port)
tls_dist_port=$(free_port)
tls_node="bucketfn-e2e-tls-$$@localhost"
tls_rabbit_dir=$(mktemp -d)
on_exit "rm -rf '$tls_rabbit_dir'"
chown rabbitmq: "$tls_rabbit_dir"
cat >"$tls_rabbit_dir/rabbitmq.conf" <<CONF
listeners.tcp = none
listeners.ssl.default = 127.0.0.1:$tls_amqps_port
ssl_options.cacertfile = $tls_dir/ca.pem
ssl_options.certfile = $tls_dir/server.pem
ssl_options.keyfile = $tls_dir/server.key
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
CONF
log "starting RabbitMQ node $tls_node with only a TLS listener on 127.0.0.1:$tls_amqps_port"
start_rabbitmq "$tls_node" "$tls_rabbit_dir" RABBITMQ_DIST_PORT="$tls_dist_port" \
  RABBITMQ_CONFIG_FILE="$tls_rabbit_dir/rabbitmq.conf"
wait_port "$tls_amqps_port" 30

# --- Redis with a TLS port only.
tls_redis_port=$(free_port)
redis-server --port 0 --tls-port "$tls_redis_port" --bind 127.0.0.1 \
  --tls-cert-file "$tls_dir/server.pem" --tls-key-file "$tls_dir/server.key" \
  --tls-ca-cert-file "$tls_dir/ca.pem" --tls-auth-clients no \
  --save '' --appendonly no --dir "$tls_dir" --daemonize yes --pidfile "$tls_dir/redis.pid" >/dev/null
on_exit "kill \$(cat '$tls_dir/redis.pid')"
wait_port "$tls_redis_port"
tls_redis_cli() {
  redis-cli --tls --cacert "$tls_dir/ca.pem" -h 127.0.0.1 -p "$tls_redis_port" "$@"
}

# --- amqps://: sidecar-on-create archives one photo; its request goes over TLS.
tls_api_port=$(free_port)
tls_ftp_port=$(free_port)
mkdir -p "$tls_dir/ftp/VRT/DISK-SHARE-EVENTS" "$tls_dir/storage/media-uploads/photos/2024"
"$BUCKETFN_BIN/archive-stubs" --http "127.0.0.1:$tls_api_port" --ftp-port "$tls_ftp_port" \
  --ftp-root "$tls_dir/ftp" --organisation OR-rf5kf25=VRT >"$tls_dir/stubs.log" 2>&1 &
on_exit "kill $!"
wait_port "$tls_api_port"
wait_port "$tls_ftp_port"
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" \
  "$tls_dir/storage/media-uploads/photos/2024/summer beach + café ☀.jpg"
tls_api="http://127.0.0.1:$tls_api_port"
tls_sidecar() {
  # $1: the CA file to trust; the output goes to $tls_dir/sidecar.out.
  env RUST_LOG=warn \
    MEDIAHAVEN_URL="$tls_api" MEDIAHAVEN_CLIENT_ID=bucketfn-client \
    MEDIAHAVEN_CLIENT_SECRET=client-secret-value MEDIAHAVEN_USERNAME=archivist \
    MEDIAHAVEN_PASSWORD=archivist-password PID_SERVICE_URL="$tls_api/pid" \
    ORGANISATIONS_API_URL="$tls_api/organisations" TENANT_BY_BUCKET=media-uploads=OR-rf5kf25 \
    S3_DOMAIN=s3.archive.example FTP_HOST="127.0.0.1:$tls_ftp_port" FTP_USER=tra \
    FTP_PASSWORD=tra-password \
    AMQP_URL="amqps://guest:guest@127.0.0.1:$tls_amqps_port/%2f" AMQP_CA_FILE="$1" \
    AMQP_EXCHANGE=filetransfer AMQP_ROUTING_KEY=filetransfer AMQP_QUEUE=filetransfer \
    AMQP_DECLARE=create \
    AMQP_TIMEOUT_SECS=5 \
    "$BUCKETFN_BIN/sidecar-on-create" invoke "$E2E_REPO/events/aws-s3/created.json" \
    --storage "$tls_dir/storage" >"$tls_dir/sidecar.out" 2>&1
}
# Both messages name rustls's verdict: the certificate's issuer is not one it trusts.
tls_untrusted() { grep -q 'invalid peer certificate: UnknownIssuer' "$1"; }

tls_amqps_with_the_wrong_ca_fails_clearly() {
  if tls_sidecar "$tls_dir/other-ca.pem"; then log "published while trusting another CA"; return 1; fi
  tls_untrusted "$tls_dir/sidecar.out" || { log "sidecar: $(cat "$tls_dir/sidecar.out")"; return 1; }
}
tls_amqps_publishes() {
  tls_sidecar "$tls_dir/ca.pem" || { log "sidecar: $(cat "$tls_dir/sidecar.out")"; return 1; }
}
# One request on the queue, read back over TLS by pika, which checks the certificate too.
tls_request_arrived() {
  python - "$tls_amqps_port" "$tls_dir/ca.pem" <<'PY'
import json, ssl, sys
import pika

port, ca = int(sys.argv[1]), sys.argv[2]
context = ssl.create_default_context(cafile=ca)
params = pika.ConnectionParameters("127.0.0.1", port, ssl_options=pika.SSLOptions(context, "localhost"),
                                   credentials=pika.PlainCredentials("guest", "guest"))
channel = pika.BlockingConnection(params).channel()
messages = []
while True:
    method, props, body = channel.basic_get("filetransfer", auto_ack=True)
    if method is None:
        break
    messages.append((props, json.loads(body)))
assert len(messages) == 1, messages
props, body = messages[0]
assert props.delivery_mode == 2 and props.correlation_id, props
assert body["destination"]["path"].startswith("/mnt/STORAGE/INGEST/SIDECAR/VRT/"), body
PY
}
check "amqps:// with a CA file that does not sign the broker's certificate fails, saying so" \
  tls_amqps_with_the_wrong_ca_fails_clearly
check "sidecar-on-create publishes over amqps:// trusting AMQP_CA_FILE" tls_amqps_publishes
check "the file-transfer request arrived once, read back over TLS" tls_request_arrived

# --- rediss://: forward-to-stream as a service records its events in the TLS-only Redis.
mkdir -p "$tls_dir/storage/logs/vpc"
echo "2 123456789010 eni-1 10.0.1.5 10.0.0.220 39812 80 6 20 4249 1418530010 1418530070 ACCEPT OK" \
  >"$tls_dir/storage/logs/vpc/a.log"
tls_serve() {
  # $1: the CA the ledger trusts (LEDGER_CA_FILE), $2: the log file, $3: the ledger's key
  # prefix; sets tls_port. Nothing untrusted reaches the loopback listener.
  tls_port=$(free_port)
  env LEDGER_CA_FILE="$1" LEDGER_URL="rediss://127.0.0.1:$tls_redis_port/" LEDGER_PREFIX="$3" \
    FORWARD_SINK=file FORWARD_FILE="$tls_dir/claims.jsonl" PORT="$tls_port" LOG_FORMAT=json \
    EVENT_AUTH=none "$BUCKETFN_BIN/forward-to-stream" serve --storage "$tls_dir/storage" \
    >"$2" 2>&1 &
  on_exit "kill $!"
  wait_port "$tls_port" 30
}
tls_notify() {
  curl -s -o /dev/null -w '%{http_code}' -H 'content-type: application/json' \
    --data-binary '{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventName":"ObjectCreated:Put","eventTime":"2024-11-05T14:22:31.493Z","s3":{"bucket":{"name":"logs"},"object":{"key":"vpc/a.log","size":1,"eTag":"e2e"}}}]}' \
    "http://127.0.0.1:$1/"
}
tls_ledger_records_over_rediss() {
  local history
  tls_serve "$tls_dir/ca.pem" "$tls_dir/serve.log" bucketfn-e2e-tls || return 1
  [ "$(tls_notify "$tls_port")" = 202 ] || { log "the event was not accepted"; return 1; }
  for _ in $(seq 1 50); do
    history=$(tls_redis_cli LRANGE bucketfn-e2e-tls:history 0 -1)
    if [ -n "$history" ]; then break; fi
    sleep 0.1
  done
  python3 - "$history" <<'PY' || { log "history: $history; log: $(tail -3 "$tls_dir/serve.log")"; return 1; }
import json, sys
[entry] = [json.loads(line) for line in sys.argv[1].splitlines() if line]
assert entry["bucket"] == "logs" and entry["key"] == "vpc/a.log", entry
assert entry["outcome"] == "completed", entry
PY
  [ "$(tls_redis_cli HGET bucketfn-e2e-tls:stats object:succeeded)" = 1 ]
}
tls_ledger_with_the_wrong_ca_fails_clearly() {
  tls_serve "$tls_dir/other-ca.pem" "$tls_dir/serve-other.log" bucketfn-e2e-other || return 1
  # The ledger failing delays and fails no event.
  [ "$(tls_notify "$tls_port")" = 202 ] || { log "the event was not accepted"; return 1; }
  for _ in $(seq 1 50); do
    if grep -q 'Event not recorded in the ledger' "$tls_dir/serve-other.log"; then break; fi
    sleep 0.1
  done
  tls_untrusted "$tls_dir/serve-other.log" || { log "log: $(tail -3 "$tls_dir/serve-other.log")"; return 1; }
  [ "$(tls_redis_cli EXISTS bucketfn-e2e-other:history)" = 0 ]
}
check "forward-to-stream records its event in Redis over rediss://" tls_ledger_records_over_rediss
check "rediss:// to a server whose CA is not trusted is a logged ledger error naming it" \
  tls_ledger_with_the_wrong_ca_fails_clearly
