# The functions as AWS Lambda runs them, locally: cargo-lambda's emulator (`cargo lambda watch`,
# the real Runtime API) runs thumbnail-on-create, cleanup-on-remove and forward-to-stream
# against an S3 server process (s3s-fs), every sample in events/ is sent with
# `cargo lambda invoke --data-file`, and the results are checked in the store and the sink;
# then thumbnail-on-create runs as an HTTP service and gets the binary-mode CloudEvent samples
# (with their headers) from curl. Sourced by scripts/e2e.sh.
# Cold cost: cargo-lambda and zig from PyPI (under a minute), s3s-fs from crates.io (about
# 3 min, once, cached), one debug build of the functions (already built by e2e.sh).

need_venv cargo-lambda ziglang
need_cargo_bin s3s-fs s3s-fs 0.14.1 --features binary

lam_dir=$(mktemp -d)
on_exit "rm -rf '$lam_dir'"
lam_s3_port=$(free_port)
lam_key=bucketfn-e2e-access
lam_secret=bucketfn-e2e-secret
mkdir -p "$lam_dir/s3"
s3s-fs --host 127.0.0.1 --port "$lam_s3_port" --access-key "$lam_key" --secret-key "$lam_secret" \
  "$lam_dir/s3" >"$lam_dir/s3s.log" 2>&1 &
on_exit "kill $!"
wait_port "$lam_s3_port"
lam_s3="http://127.0.0.1:$lam_s3_port"

# S3 requests signed with SigV4 by curl itself; $1 method, $2 path (already URL-encoded).
# S3 wants the payload hash header, which curl signs when it is given.
lam_s3_call() {
  curl -s -o "$lam_dir/s3-response" -w '%{http_code}' -X "$1" "$lam_s3/$2" \
    --aws-sigv4 "aws:amz:us-east-1:s3" --user "$lam_key:$lam_secret" \
    -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' "${@:3}"
}
# Creates bucket $1, or fails naming the answer.
lam_s3_bucket() {
  local code
  code=$(lam_s3_call PUT "$1")
  [ "$code" = 200 ] || { log "creating bucket $1: HTTP $code $(cat "$lam_dir/s3-response")"; return 1; }
}
lam_url() { python3 -c 'import sys, urllib.parse; print(urllib.parse.quote(sys.argv[1]))' "$1"; }

for bucket in media-uploads photos; do
  lam_s3_bucket "$bucket"
done
# The image the AWS S3 samples name, so that their events have something to thumbnail.
lam_image_key='photos/2024/summer beach + café ☀.jpg'
lam_code=$(lam_s3_call PUT "media-uploads/$(lam_url "$lam_image_key")" \
  --data-binary @"$E2E_REPO/demo/photos/samples/lake at dawn.jpg")
[ "$lam_code" = 200 ] || log "uploading the sample image: HTTP $lam_code $(cat "$lam_dir/s3-response")"

lam_port=$(free_port)
lam_claims="$lam_dir/claims.jsonl"
# An env file, since --env-var splits values at commas.
cat >"$lam_dir/lambda.env" <<ENV
AWS_ENDPOINT_URL_S3=$lam_s3
AWS_ACCESS_KEY_ID=$lam_key
AWS_SECRET_ACCESS_KEY=$lam_secret
AWS_REGION=us-east-1
S3_MAX_ATTEMPTS=1
THUMBNAIL_SIZES=128,256
CLEANUP_TARGETS=derivatives
FORWARD_SINK=file
FORWARD_FILE=$lam_claims
SOURCE_BUCKET=media-uploads
ENV
cargo lambda watch --quiet --invoke-port "$lam_port" --env-file "$lam_dir/lambda.env" \
  >"$lam_dir/watch.log" 2>&1 &
on_exit "kill $!"
# The emulator checks the workspace with cargo before it listens.
wait_port "$lam_port" 180 || log "cargo lambda watch: $(tail -5 "$lam_dir/watch.log")"

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

# Whether S3 answers GETs of the sample image's two thumbnails with HTTP $1.
lam_thumbnails_answer() {
  local size code
  for size in 128 256; do
    code=$(lam_s3_call GET "media-uploads/$(lam_url "thumbnails/$lam_image_key/$size.jpg")")
    [ "$code" = "$1" ] || { log "the $size px thumbnail: HTTP $code, expected $1"; return 1; }
  done
}

# Every JSON sample, as thumbnail-on-create sees it under Lambda. The rejected ones must be
# reported as invalid events, the Azure creation as a permanent error (no Azure store), the
# SQS batch with a garbage message as a partial batch failure; everything else succeeds.
lam_every_sample_under_lambda() {
  local sample relative response failed=0
  while IFS= read -r sample; do
    relative=${sample#"$E2E_REPO/events/"}
    # Binary-mode CloudEvents travel as HTTP headers, which Lambda payloads do not have.
    [ -e "${sample%.json}.headers" ] && continue
    response=$(lam_invoke thumbnail-on-create "$sample") || { failed=1; continue; }
    case "$relative" in
      # Unparseable JSON never reaches the function: the runtime itself refuses it.
      invalid/truncated.json) grep -q 'DeserializeError' <<<"$response" ;;
      invalid/*) grep -q 'bucketfn.InvalidEvent' <<<"$response" ;;
      azure/event-grid-created.json) grep -q 'bucketfn.Permanent' <<<"$response" ;;
      sqs/one-bad-message.json) grep -q '"itemIdentifier":"a1f0c2d3-0000-4000-8000-000000000002"' <<<"${response// /}" ;;
      *) ! grep -q 'errorType' <<<"$response" && ! grep -q 'itemIdentifier' <<<"$response" ;;
    esac || { log "$relative: unexpected answer: $response"; failed=1; }
  done < <(find "$E2E_REPO/events" -name '*.json' | sort)
  [ "$failed" = 0 ] || return 1
  # The created sample's image now has both thumbnails in the store.
  lam_thumbnails_answer 200
}

# The object is deleted, then its removal event arrives: the derivatives go too.
lam_cleanup_removes_the_thumbnails() {
  local code
  code=$(lam_s3_call DELETE "media-uploads/$(lam_url "$lam_image_key")")
  [ "$code" = 204 ] || { log "deleting the source: HTTP $code $(cat "$lam_dir/s3-response")"; return 1; }
  local response
  response=$(lam_invoke cleanup-on-remove "$E2E_REPO/events/aws-s3/removed.json") || return 1
  ! grep -q errorType <<<"$response" || { log "cleanup: $response"; return 1; }
  lam_thumbnails_answer 404
}

# Claim checks for created objects, one line each in the file sink.
lam_forward_publishes_claim_checks() {
  local response
  response=$(lam_invoke forward-to-stream "$E2E_REPO/events/aws-s3/multi-record.json") || return 1
  ! grep -q errorType <<<"$response" || { log "forward: $response"; return 1; }
  python3 - "$lam_claims" <<'PY'
import json, sys
lines = [json.loads(l) for l in open(sys.argv[1])]
text = open(sys.argv[1]).read()
assert "video/東京 2024.mp4" in text, text
assert "photos/copy of IMG_0001.JPG" in text, text
assert len(lines) == 2, len(lines)
PY
}

check "every events/ sample through cargo lambda (thumbnail-on-create, S3 server)" lam_every_sample_under_lambda
check "cargo lambda: cleanup-on-remove removes the thumbnails of a removed object" lam_cleanup_removes_the_thumbnails
check "cargo lambda: forward-to-stream writes a claim check per created object" lam_forward_publishes_claim_checks

# The same function as a Knative service: binary-mode CloudEvents with their headers.
lam_http_port=$(free_port)
PORT=$lam_http_port SOURCE_BUCKET=media-uploads AWS_ENDPOINT_URL_S3=$lam_s3 AWS_ACCESS_KEY_ID=$lam_key \
  AWS_SECRET_ACCESS_KEY=$lam_secret AWS_REGION=us-east-1 S3_MAX_ATTEMPTS=1 \
  "$BUCKETFN_BIN/thumbnail-on-create" serve >"$lam_dir/serve.log" 2>&1 &
on_exit "kill $!"
wait_port "$lam_http_port"

lam_cloudevents_over_http() {
  local sample code failed=0
  for sample in "$E2E_REPO"/events/*/*.headers; do
    local body
    body=$(ls "${sample%.headers}".* | grep -v '\.headers$' | head -n1)
    code=$(curl -s -o "$lam_dir/http-response" -w '%{http_code}' -X POST "http://127.0.0.1:$lam_http_port/" \
      -H @"$sample" --data-binary @"$body")
    # Every one of these is a valid event whose object is not in the store: done (skipped).
    [ "$code" = 202 ] || { log "${sample#"$E2E_REPO/"}: HTTP $code $(cat "$lam_dir/http-response")"; failed=1; }
  done
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$lam_http_port/" \
    -H 'content-type: application/json' --data-binary @"$E2E_REPO/events/invalid/truncated.json")
  [ "$code" = 400 ] || { log "invalid JSON answered $code"; failed=1; }
  [ "$failed" = 0 ]
}

check "binary-mode CloudEvents with their headers over HTTP (curl)" lam_cloudevents_over_http
