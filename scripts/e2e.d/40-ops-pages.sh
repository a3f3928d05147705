# The operations surface end to end: two thumbnail-on-create services sharing one ledger in a
# real Redis (Debian's redis-server), events posted to one and counted by the other, and the
# pages loaded in headless Chromium (Debian's chromium), which must show escaped keys and the
# thumbnails; a screenshot of each page is kept in .cache/e2e/. Sourced by scripts/e2e.sh.
# Cold: chromium and redis-server from apt (about a minute); the checks take seconds.

need_apt redis-server chromium

ops_dir=$(mktemp -d)
on_exit "rm -rf '$ops_dir'"
ops_shots="$E2E_REPO/.cache/e2e"
mkdir -p "$ops_shots" "$ops_dir/storage/photos/2024"

ops_redis_port=$(free_port)
redis-server --port "$ops_redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$ops_dir" --daemonize yes --pidfile "$ops_dir/redis.pid" >/dev/null
on_exit "kill \$(cat '$ops_dir/redis.pid')"
wait_port "$ops_redis_port"

# The demo photo twice: once under a plain key, once under a key made to break pages.
ops_hostile='2024/<img src=x onerror=alert(1)> & "quoted".jpg'
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$ops_dir/storage/photos/2024/lake.jpg"
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$ops_dir/storage/photos/$ops_hostile"

# Each instance takes events on one port and serves its pages on another (OPS_PORT, without
# OPS_TOKEN: the port of a pod that only the cluster's monitoring reaches); the pages are
# ops_a/ops_b, the events ev_a/ev_b.
ops_a=$(free_port)
ops_b=$(free_port)
ev_a=$(free_port)
ev_b=$(free_port)
for pair in "$ev_a:$ops_a" "$ev_b:$ops_b"; do
  PORT=${pair%:*} OPS_PORT=${pair#*:} LISTEN_ADDRESS=127.0.0.1 EVENT_AUTH=token \
    EVENT_TOKEN=e2e-ops-pages-token-0123 LEDGER_URL="redis://127.0.0.1:$ops_redis_port/" \
    SOURCE_BUCKET=photos THUMBNAIL_SIZES=128,256 LOG_FORMAT=json \
    "$BUCKETFN_BIN/thumbnail-on-create" serve --storage "$ops_dir/storage" \
    >"$ops_dir/service-${pair%:*}.log" 2>&1 &
  on_exit "kill $!"
done
for port in "$ev_a" "$ev_b" "$ops_a" "$ops_b"; do wait_port "$port"; done

# A MinIO webhook notification for photos/$1 (URL-encoded the way MinIO does).
ops_notify() {
  local port=$1 key=$2 encoded
  encoded=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.quote_plus(sys.argv[1]))' "$key")
  curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$port/" \
    -H 'content-type: application/json' -H 'authorization: Bearer e2e-ops-pages-token-0123' \
    --data "{\"EventName\":\"s3:ObjectCreated:Put\",\"Key\":\"photos/x\",\"Records\":[{\"eventVersion\":\"2.0\",\"eventSource\":\"minio:s3\",\"awsRegion\":\"\",\"eventName\":\"s3:ObjectCreated:Put\",\"s3\":{\"bucket\":{\"name\":\"photos\"},\"object\":{\"key\":\"$encoded\",\"size\":56575}}}]}"
}

ops_events_counted_by_the_other_instance() {
  [ "$(ops_notify "$ev_a" 2024/lake.jpg)" = 202 ] || return 1
  [ "$(ops_notify "$ev_b" "$ops_hostile")" = 202 ] || return 1
  local stats
  for _ in $(seq 1 50); do
    stats=$(curl -s "http://127.0.0.1:$ops_a/events/stats")
    if python3 -c 'import json, sys; s = json.loads(sys.argv[1]); sys.exit(s["object_events"]["succeeded"] != 2)' "$stats"; then
      return 0
    fi
    sleep 0.1
  done
  log "stats on A after one event on each instance: $stats"
  return 1
}

ops_chromium() {
  chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
    --disable-background-networking --disable-component-update --disable-sync \
    --user-data-dir="$ops_dir/chromium" "$@" 2>/dev/null
}

ops_history_page_in_a_browser() {
  local dom
  dom=$(ops_chromium --dump-dom "http://127.0.0.1:$ops_b/events/history") || return 1
  # The key arrives as text, never as markup: the browser's DOM holds it escaped.
  grep -q '2024/&lt;img src=x onerror=alert(1)&gt; &amp; "quoted".jpg' <<<"$dom" || { log "escaped key missing"; return 1; }
  ! grep -q '<img src="x"' <<<"$dom" || { log "the key became markup"; return 1; }
  grep -q 'object events succeeded' <<<"$dom" || return 1
  grep -q 'written' <<<"$dom" || { log "no files touched listed"; return 1; }
  ops_chromium --window-size=1400,900 --screenshot="$ops_shots/events-history.png" \
    "http://127.0.0.1:$ops_b/events/history" >/dev/null
  [ -s "$ops_shots/events-history.png" ]
}

ops_files_page_in_a_browser() {
  local dom
  dom=$(ops_chromium --dump-dom "http://127.0.0.1:$ops_a/files") || return 1
  [ "$(grep -o '<img class="thumb"' <<<"$dom" | wc -l)" -eq 4 ] || { log "expected 4 thumbnails on /files"; return 1; }
  grep -q '<th>256 px</th>' <<<"$dom" || return 1
  # The thumbnail the page shows is a real JPEG.
  curl -sf "http://127.0.0.1:$ops_a/files/object?input=2024%2Flake.jpg&label=256%20px" -o "$ops_dir/thumb.jpg" || return 1
  [ "$(head -c 2 "$ops_dir/thumb.jpg" | od -An -tx1 | tr -d ' ')" = ffd8 ] || return 1
  ops_chromium --window-size=1400,900 --screenshot="$ops_shots/files.png" \
    "http://127.0.0.1:$ops_a/files" >/dev/null
  [ -s "$ops_shots/files.png" ]
}

ops_ledger_down_delays_nothing() {
  kill "$(cat "$ops_dir/redis.pid")"
  sleep 0.3
  local started elapsed code
  started=$(date +%s%N)
  code=$(ops_notify "$ev_a" 2024/lake.jpg)
  elapsed=$(( ($(date +%s%N) - started) / 1000000 ))
  [ "$code" = 202 ] || { log "event failed with the ledger down: $code"; return 1; }
  # A redelivery of done work: a few HEADs, never the ledger's 2 s write timeout.
  [ "$elapsed" -lt 1500 ] || { log "event took ${elapsed} ms with the ledger down"; return 1; }
  sleep 2.5
  curl -s "http://127.0.0.1:$ops_a/metrics" | grep -Eq '^bucketfn_ledger_errors_total [1-9]'
}

check "two instances share one ledger in Redis" ops_events_counted_by_the_other_instance
check "/events/history in Chromium: escaped keys, files touched" ops_history_page_in_a_browser
check "/files in Chromium: sources beside their thumbnails" ops_files_page_in_a_browser
check "a ledger that is down fails and delays no event; it is counted" ops_ledger_down_delays_nothing
