# The running services attacked from curl, the way anyone who reaches them could: deliveries
# with no credential, a wrong token, a JWT from a key that is not the issuer's, an expired or
# misdirected one, a sweep ping from anyone, an event for a bucket the function does not
# serve, a forged etag in a claim, the operations pages from outside, a stored HTML object
# asked for as a thumbnail, and debug logging with credentials in the configuration. The OIDC
# issuer is a small Python server signing with PyJWT (an implementation that is not ours).
# Sourced by scripts/e2e.sh. Cold: PyJWT and cryptography from PyPI into .cache/venv.

need_venv 'PyJWT[crypto]==2.10.1'

atk_dir=$(mktemp -d)
on_exit "rm -rf '$atk_dir'"
mkdir -p "$atk_dir/storage/photos" "$atk_dir/storage/payroll" "$atk_dir/storage/logs"
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$atk_dir/storage/photos/lake.jpg"
echo 'salary,1' >"$atk_dir/storage/payroll/2024.csv"
echo 'one line' >"$atk_dir/storage/logs/app.log"

atk_token=e2e-event-token-0123456789
atk_ops_token=e2e-ops-token-0123456789
atk_audience=serving.knative.dev/service/bucketfn/thumbnail-on-create

# The issuer: discovery, JWKS, and a /sign endpoint that hands out tokens for the checks
# (`?as=stranger` signs with a second key the JWKS does not hold; `exp` and `aud` as asked).
atk_issuer_port=$(free_port)
cat >"$atk_dir/issuer.py" <<'PY'
import http.server, json, sys, time, urllib.parse
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

port = int(sys.argv[1])
issuer = f"http://127.0.0.1:{port}"
key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
jwk = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
jwk.update(kid="e2e", alg="RS256", use="sig")

class Issuer(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def answer(self, body):
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/.well-known/openid-configuration":
            self.answer({"issuer": issuer, "jwks_uri": f"{issuer}/keys"})
        elif url.path == "/keys":
            self.answer({"keys": [jwk]})
        elif url.path == "/sign":
            claims = {"iss": issuer, "aud": q["aud"], "exp": int(time.time()) + int(q.get("ttl", "600")),
                      "sub": "system:serviceaccount:bucketfn:photos-trigger"}
            signer = stranger if q.get("as") == "stranger" else key
            self.answer(jwt.encode(claims, signer, algorithm="RS256", headers={"kid": "e2e"}))
        else:
            self.send_response(404)
            self.end_headers()

http.server.ThreadingHTTPServer(("127.0.0.1", port), Issuer).serve_forever()
PY
python "$atk_dir/issuer.py" "$atk_issuer_port" >"$atk_dir/issuer.log" 2>&1 &
on_exit "kill $!"
wait_port "$atk_issuer_port"
atk_sign() { curl -sf "http://127.0.0.1:$atk_issuer_port/sign?$1"; }

# thumbnail-on-create, checking both schemes, pages on their own port behind OPS_TOKEN, and
# trace logging with credentials in its configuration.
atk_port=$(free_port)
atk_ops_port=$(free_port)
atk_secret=ledger-password-never-logged
(
  export PORT=$atk_port OPS_PORT=$atk_ops_port LISTEN_ADDRESS=127.0.0.1 SOURCE_BUCKET=photos
  export EVENT_AUTH=oidc,token EVENT_TOKEN=$atk_token OPS_TOKEN=$atk_ops_token
  export OIDC_ISSUER="http://127.0.0.1:$atk_issuer_port" OIDC_AUDIENCE=$atk_audience
  export LEDGER_URL="redis://default:$atk_secret@127.0.0.1:9/" RUST_LOG=trace LOG_FORMAT=json
  exec "$BUCKETFN_BIN/thumbnail-on-create" serve --storage "$atk_dir/storage"
) >"$atk_dir/thumbnail.log" 2>&1 &
on_exit "kill $!"
wait_port "$atk_port"
wait_port "$atk_ops_port"

# POST a MinIO notification for bucket $1, key $2, with an Authorization header $3 (or none);
# prints the status code.
atk_post() {
  local bucket=$1 key=$2 authorization=${3:-} port=${4:-$atk_port}
  local args=(-s -o "$atk_dir/reply" -w '%{http_code}' -X POST "http://127.0.0.1:$port/"
    -H 'content-type: application/json'
    --data "{\"Records\":[{\"eventSource\":\"minio:s3\",\"eventName\":\"s3:ObjectCreated:Put\",\"s3\":{\"bucket\":{\"name\":\"$bucket\"},\"object\":{\"key\":\"$key\",\"size\":56575,\"eTag\":\"forged\"}}}]}")
  [ -n "$authorization" ] && args+=(-H "authorization: $authorization")
  curl "${args[@]}"
}
atk_thumbnail="$atk_dir/storage/photos/thumbnails/lake.jpg/256.jpg"

atk_forged_deliveries_get_401_and_do_nothing() {
  local stranger expired elsewhere code what
  stranger=$(atk_sign "aud=$atk_audience&as=stranger") || return 1
  expired=$(atk_sign "aud=$atk_audience&ttl=-600") || return 1
  elsewhere=$(atk_sign "aud=serving.knative.dev/service/bucketfn/cleanup-on-remove") || return 1
  for what in none "Bearer wrong-token-0123456789" "Basic $atk_token" "Bearer $stranger" \
    "Bearer $expired" "Bearer $elsewhere"; do
    [ "$what" = none ] && what=
    code=$(atk_post photos lake.jpg "$what")
    [ "$code" = 401 ] || { log "got $code for '${what:0:20}...'"; return 1; }
    ! grep -q "$atk_token" "$atk_dir/reply" || { log "the token came back"; return 1; }
  done
  # A sweep ping, as a Knative PingSource would send it, from anyone.
  code=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://127.0.0.1:$atk_port/" \
    -H 'ce-specversion: 1.0' -H 'ce-type: dev.knative.sources.ping' -H 'ce-id: 1' \
    -H 'ce-source: /apis/v1/namespaces/bucketfn/pingsources/sweep' \
    -H 'content-type: application/json' --data '{"bucket":"photos"}')
  [ "$code" = 401 ] || { log "a ping from anyone got $code"; return 1; }
  [ ! -e "$atk_thumbnail" ] || { log "a forged delivery made a thumbnail"; return 1; }
}

atk_real_deliveries_act() {
  local token code
  token=$(atk_sign "aud=$atk_audience") || return 1
  code=$(atk_post photos lake.jpg "Bearer $token")
  [ "$code" = 202 ] || { log "a real OIDC token got $code: $(cat "$atk_dir/reply")"; return 1; }
  [ -s "$atk_thumbnail" ] || { log "no thumbnail"; return 1; }
  code=$(atk_post photos lake.jpg "Bearer $atk_token")
  [ "$code" = 202 ] || { log "the shared token got $code"; return 1; }
}

atk_a_foreign_bucket_is_refused() {
  local code
  code=$(atk_post payroll 2024.csv "Bearer $atk_token")
  [ "$code" = 400 ] || { log "an event for payroll got $code"; return 1; }
  grep -q 'payroll' "$atk_dir/reply" || { log "the refusal does not name the bucket: $(cat "$atk_dir/reply")"; return 1; }
}

atk_pages_are_private() {
  local path code
  for path in /metrics /events/stats /events/history /files; do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$atk_port$path")
    [ "$code" = 404 ] || { log "$path on PORT: $code"; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$atk_ops_port$path")
    [ "$code" = 401 ] || { log "$path on OPS_PORT without a credential: $code"; return 1; }
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "authorization: Bearer $atk_token" \
      "http://127.0.0.1:$atk_ops_port$path")
    [ "$code" = 401 ] || { log "$path with the event token: $code"; return 1; }
  done
  curl -sf -u "ops:$atk_ops_token" -D "$atk_dir/headers" -o /dev/null \
    "http://127.0.0.1:$atk_ops_port/files" || return 1
  grep -qi '^x-content-type-options: nosniff' "$atk_dir/headers" || return 1
  grep -qi "^content-security-policy: default-src 'none'" "$atk_dir/headers" || return 1
}

atk_html_is_never_served_as_a_thumbnail() {
  local dir="$atk_dir/storage/photos/thumbnails/page.jpg" code
  mkdir -p "$dir"
  echo '<script>alert(document.cookie)</script>' >"$dir/256.jpg"
  code=$(curl -s -o "$atk_dir/served" -w '%{http_code}' -u "ops:$atk_ops_token" \
    "http://127.0.0.1:$atk_ops_port/files/object?input=page.jpg&label=256%20px")
  [ "$code" = 403 ] || { log "an HTML object got $code"; return 1; }
  ! grep -q '<script' "$atk_dir/served"
}

atk_trace_logging_prints_no_secret() {
  [ -s "$atk_dir/thumbnail.log" ] || return 1
  ! grep -q "$atk_secret" "$atk_dir/thumbnail.log" || { log "the ledger password is in the log"; return 1; }
  ! grep -q "$atk_token" "$atk_dir/thumbnail.log" || { log "the event token is in the log"; return 1; }
  ! grep -q "$atk_ops_token" "$atk_dir/thumbnail.log" || { log "the ops token is in the log"; return 1; }
  # Dependencies stay at info although RUST_LOG=trace: none of theirs logs below it.
  python3 - "$atk_dir/thumbnail.log" <<'PY' || { log "a dependency logged at debug/trace"; return 1; }
import json, sys
own = ("bucketfn", "thumbnail_on_create")
for line in open(sys.argv[1]):
    try:
        event = json.loads(line)
    except ValueError:
        continue
    target = event.get("target", "")
    if event.get("level") in ("DEBUG", "TRACE") and not target.startswith(own):
        sys.exit(f"{target} logged at {event['level']}")
PY
}

# forward-to-stream: a claim for an object of its bucket carries the store's etag, not the
# event's; one for a bucket it does not serve never reaches the sink.
atk_fwd_port=$(free_port)
(
  export PORT=$atk_fwd_port LISTEN_ADDRESS=127.0.0.1 SOURCE_BUCKETS=logs
  export EVENT_AUTH=token EVENT_TOKEN=$atk_token FORWARD_SINK=file FORWARD_FILE="$atk_dir/claims.jsonl"
  exec "$BUCKETFN_BIN/forward-to-stream" serve --storage "$atk_dir/storage"
) >"$atk_dir/forward.log" 2>&1 &
on_exit "kill $!"
wait_port "$atk_fwd_port"

atk_claims_carry_the_stores_facts() {
  local code
  code=$(atk_post logs app.log "Bearer $atk_token" "$atk_fwd_port")
  [ "$code" = 202 ] || { log "the claim got $code: $(cat "$atk_dir/reply")"; return 1; }
  code=$(atk_post payroll 2024.csv "Bearer $atk_token" "$atk_fwd_port")
  [ "$code" = 400 ] || { log "a claim for payroll got $code"; return 1; }
  [ "$(wc -l <"$atk_dir/claims.jsonl")" -eq 1 ] || { log "claims: $(cat "$atk_dir/claims.jsonl")"; return 1; }
  ! grep -q 'forged' "$atk_dir/claims.jsonl" || { log "the forged etag reached the sink"; return 1; }
  ! grep -q 'payroll' "$atk_dir/claims.jsonl"
}

check "forged, expired and misdirected deliveries get 401 and do nothing" atk_forged_deliveries_get_401_and_do_nothing
check "a real OIDC token and the shared token are let in" atk_real_deliveries_act
check "an event for a bucket the function does not serve is refused, naming it" atk_a_foreign_bucket_is_refused
check "operations pages: not on PORT, 401 on OPS_PORT without OPS_TOKEN, nosniff and CSP" atk_pages_are_private
check "an HTML object under a thumbnail's key is never served" atk_html_is_never_served_as_a_thumbnail
check "RUST_LOG=trace prints no secret, and no dependency below info" atk_trace_logging_prints_no_secret
check "a claim carries the store's etag; a foreign bucket's never reaches the sink" atk_claims_carry_the_stores_facts
