# All four functions as AWS Lambda runs them, locally, with real parts around them:
# cargo-lambda's emulator (`cargo lambda watch`, the real Runtime API), an S3 server process
# (s3s-fs), a RabbitMQ node (Debian's rabbitmq-server on loopback ports), and the archive API
# stubs and FTP server of the tests as a process (archive-stubs). Every sample in events/ goes
# to every function with `cargo lambda invoke --data-file` and each answer is compared with
# tests/outcomes.tsv, which tests/outcomes.rs reads too; then each function's outputs are
# checked by its file in lambda/ (thumbnails in S3, sidecars on the FTP server, file-transfer
# requests on RabbitMQ, claim checks in the sink, clean-ups), and lambda/serve.sh runs all
# four as HTTP services (`serve`, as Knative runs them).
# Sourced by scripts/e2e.sh. Cold: cargo-lambda, zig and pika from PyPI (under a minute),
# RabbitMQ and Erlang from apt (about 25 s), s3s-fs from crates.io (about 3 min, once, cached).

need_apt rabbitmq-server
need_venv cargo-lambda ziglang pika
need_cargo_bin s3s-fs s3s-fs 0.14.1 --features binary

lam_dir=$(mktemp -d)
on_exit "rm -rf '$lam_dir'"
lam_parts="$E2E_REPO/scripts/e2e.d/lambda"
# The functions, in the order of their parts in lambda/ (NN-FUNCTION.sh, each checking what
# its function made): thumbnail-on-create makes thumbnails before cleanup-on-remove gets the
# stale removals that must leave them.
lam_functions=()
for lam_part in "$lam_parts"/[0-9]*-*.sh; do
  lam_part=${lam_part##*/}
  lam_part=${lam_part#*-}
  lam_functions+=("${lam_part%.sh}")
done

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
# lam_s3_expect CODE METHOD BUCKET KEY [curl options]: the request, answered with CODE.
lam_s3_expect() {
  local want=$1 method=$2 path code
  path="$3${4:+/$(e2e_tool urlquote "$4")}"
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

# --- RabbitMQ: a node of this part's own; sets lam_amqp_url.
start_loopback_rabbitmq lam lambda

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

# The answer cargo lambda printed, in the words of tests/outcomes.tsv.
lam_answer() { e2e_tool lambda-answer; }

# What each function must answer to each sample: lam_outcome[FUNCTION:SAMPLE] for the pairs
# tests/outcomes.tsv names (a row for `*` names the pair for every function); any other pair
# is `done`.
declare -A lam_outcome
while IFS=$'\t' read -r lam_sample lam_for lam_want _; do
  [[ -z $lam_sample || $lam_sample == '#'* ]] && continue
  for lam_function in "${lam_functions[@]}"; do
    [[ $lam_for == '*' || $lam_for == "$lam_function" ]] &&
      lam_outcome[$lam_function:$lam_sample]=$lam_want
  done
done <"$E2E_REPO/tests/outcomes.tsv"
# lam_expected FUNCTION SAMPLE: what FUNCTION must answer to SAMPLE (its path under events/).
lam_expected() { echo "${lam_outcome[$1:$2]:-done}"; }

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

# A function without a part would go unchecked, and a part without a function checks nothing.
lam_parts_are_the_functions() {
  [ "$(printf '%s\n' "${lam_functions[@]}" | sort)" = "$(workspace_functions | sort)" ] ||
    { log "parts in lambda/: ${lam_functions[*]}; functions: $(workspace_functions | xargs)"; return 1; }
}
check "scripts/e2e.d/lambda/ has one part per function of the workspace" lam_parts_are_the_functions

for lam_function in "${lam_functions[@]}"; do
  check "cargo lambda: every events/ sample to $lam_function" lam_every_sample_to "$lam_function"
done

# --- The outputs of that pass, function by function.
for lam_part in "$lam_parts"/[0-9]*-*.sh; do
  # shellcheck disable=SC1090
  source "$lam_part"
done

# --- All four again, as Knative runs them.
# shellcheck disable=SC1091
source "$lam_parts/serve.sh"
