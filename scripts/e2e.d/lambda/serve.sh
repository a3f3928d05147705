# All four functions as Knative services, sourced last by scripts/e2e.d/10-lambda-local.sh
# (its S3 server, RabbitMQ, stubs and environment): every CloudEvent sample from curl, binary
# mode with the samples' headers and structured mode, answered as tests/outcomes.tsv says;
# one object announced both ways is made, archived and claimed once; and forward-to-stream
# publishes into Knative Eventing through K_SINK.

lam_claims_http="$lam_dir/claims-http.jsonl"
# What a MinIO webhook's auth_token or a curl with a header sends (scripts/e2e.d/45-attacks.sh
# attacks the services without it).
lam_event_token=e2e-lambda-local-token-0123
declare -A lam_http_port
for lam_function in "${lam_functions[@]}"; do
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
  for function in "${lam_functions[@]}"; do
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

# The adapter's object, announced in both modes: its thumbnails, one sidecar, one
# file-transfer request and one claim id per version.
lam_http_outputs() {
  lam_thumbnails_answer 200 "$lam_adapter_key" || return 1
  [ "$(lam_sidecar_of "$lam_adapter_key" | wc -l)" = 1 ] ||
    { log "sidecars of the adapter's object: [$(lam_sidecar_of "$lam_adapter_key")];" \
      "sidecar-on-create said: $(tail -n 5 "$lam_dir/serve-sidecar-on-create.log")"; return 1; }
  e2e_tool amqp-take "$lam_amqp_url" filetransfer >"$lam_dir/messages-http.jsonl"
  e2e_tool http-outputs "$lam_dir/messages-http.jsonl" "$lam_claims_http" "$lam_adapter_key"
}
check "over HTTP: thumbnails, one sidecar, one file-transfer request, one claim id" lam_http_outputs

# --- forward-to-stream publishing into Knative Eventing: K_SINK (as a SinkBinding injects it)
# points at a CloudEvents receiver that answers 503 to the first delivery, as a Broker that is
# not ready yet does, then records what arrives.
lam_ksink_port=$(free_port)
# Not through e2e_tool, a function: $! must be the receiver itself, for the kill.
python "$E2E_REPO/scripts/lib/e2e_tool.py" k-sink "$lam_ksink_port" "$lam_dir/k-sink.jsonl" >"$lam_dir/k-sink.log" 2>&1 &
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
  e2e_tool k-sink-got "$lam_dir/k-sink.jsonl"
}
check "forward-to-stream into Knative: K_SINK gets the claim as a binary-mode CloudEvent after a 503" \
  lam_forwarded_to_k_sink
