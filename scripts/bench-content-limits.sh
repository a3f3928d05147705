#!/usr/bin/env bash
# Benchmark (not a test): the measurements behind content mode's defaults, printed, never
# asserted. 1. gzip -6 and -9 ratios of generated logs of each kind (VPC flow logs v2, busy and
# idle, CloudTrail, access logs, JSON lines, debug JSON, health checks, a crash loop) beside a
# run of one byte: what CONTENT_MAX_RATIO must stay above and below. 2. CPU seconds per GB of
# content mode (release build, gzipped flow logs to the file sink) and of gzip -6 (the work
# KAFKA_COMPRESSION=gzip adds), and what that makes of the template's memory (its CPU share),
# timeout and concurrency: the largest CONTENT_MAX_BYTES that fits. Files go to
# target/bench/content-limits/ (SIZE_MB of each kind, default 64). Override MEMORY_MB (512),
# TIMEOUT_SECS (900) and CONCURRENCY (4) to size another deployment.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
need_apt time

size=$(( ${SIZE_MB:-64} * 1000000 ))
work=target/bench/content-limits
mkdir -p "$work/storage/bench"
cargo build --release -p forward-to-stream --quiet
binary="$PWD/target/release/forward-to-stream"

generate() {
  python3 - "$1" "$2" <<'PY'
"""Generated logs of one kind, about SIZE bytes: python3 - KIND SIZE > out"""
import json, random, sys, uuid

kind, size = sys.argv[1], int(sys.argv[2])
random.seed(42)
out = sys.stdout
written = 0

def emit(s):
    global written
    out.write(s)
    written += len(s)

def zipf_pick(pool, s=1.2):
    # Heavy-tailed choice: a few hosts talk a lot, most rarely.
    i = min(int(random.paretovariate(s)) - 1, len(pool) - 1)
    return pool[i]

if kind == "vpc":
    # VPC flow logs v2, the default format, one file of one account, as delivered every 10 min.
    enis = ["eni-%017x" % random.getrandbits(68) for _ in range(40)]
    inside = ["10.0.%d.%d" % (random.randint(0, 31), random.randint(1, 254)) for _ in range(300)]
    outside = ["%d.%d.%d.%d" % (random.randint(1, 223), random.randint(0, 255), random.randint(0, 255), random.randint(1, 254)) for _ in range(20000)]
    random.shuffle(outside)
    ports = [443, 80, 22, 53, 123, 5432, 3306, 6379, 8080, 9092]
    t = 1730800000
    while written < size:
        t += random.choice((0, 0, 0, 1))
        eni = zipf_pick(enis)
        r = random.random()
        if r < 0.02:
            emit("2 123456789012 %s - - - - - - - %d %d - NODATA\n" % (eni, t, t + 60))
            continue
        a = zipf_pick(inside)
        b = zipf_pick(outside) if random.random() < 0.6 else zipf_pick(inside)
        dport = zipf_pick(ports, 1.5)
        sport = random.randint(32768, 60999)
        proto = 17 if dport in (53, 123) else 6
        packets = max(1, int(random.lognormvariate(2, 1.5)))
        nbytes = packets * random.randint(40, 1500)
        action = "REJECT" if random.random() < 0.08 else "ACCEPT"
        if random.random() < 0.5:
            a, b, sport, dport = b, a, dport, sport
        emit("2 123456789012 %s %s %s %d %d %d %d %d %d %d %s OK\n" % (eni, a, b, sport, dport, proto, packets, nbytes, t, t + random.randint(1, 60), action))
elif kind == "cloudtrail":
    # CloudTrail log files: one JSON document {"Records": [...]}, no newlines inside.
    users = [("AssumedRole", "AROA%s:%s" % (uuid.uuid4().hex[:17].upper(), n), n) for n in ("deploy", "lambda-exec", "ci-runner", "admin", "backup", "monitoring")]
    events = [("s3.amazonaws.com", "GetObject", True), ("s3.amazonaws.com", "PutObject", False), ("sts.amazonaws.com", "AssumeRole", False),
              ("kms.amazonaws.com", "Decrypt", True), ("ec2.amazonaws.com", "DescribeInstances", True), ("lambda.amazonaws.com", "Invoke", False),
              ("logs.amazonaws.com", "PutLogEvents", False), ("dynamodb.amazonaws.com", "GetItem", True)]
    agents = ["aws-sdk-go-v2/1.30.3 os/linux lang/go#1.22.5 md/GOOS#linux md/GOARCH#arm64 api/s3#1.58.2", "Boto3/1.34.144 md/Botocore#1.34.144 ua/2.0 os/linux#5.10 md/arch#x86_64 lang/python#3.12.4 md/pyimpl#CPython cfg/retry-mode#legacy Botocore/1.34.144", "aws-internal/3 aws-sdk-java/1.12.720 Linux/5.10 OpenJDK_64-Bit_Server_VM/17.0.11+9-LTS java/17.0.11 vendor/Amazon.com_Inc.", "console.amazonaws.com"]
    ips = ["10.0.%d.%d" % (random.randint(0, 31), random.randint(1, 254)) for _ in range(50)] + ["52.%d.%d.%d" % (random.randint(0, 255), random.randint(0, 255), random.randint(1, 254)) for _ in range(50)]
    emit('{"Records":[')
    first = True
    sec = 0
    while written < size:
        sec += random.choice((0, 1))
        typ, pid, name = random.choice(users)
        src, ev, ro = random.choice(events)
        rec = {"eventVersion": "1.09",
               "userIdentity": {"type": typ, "principalId": pid, "arn": "arn:aws:sts::123456789012:assumed-role/%s/%s" % (name, name),
                                "accountId": "123456789012", "accessKeyId": "ASIA" + uuid.uuid4().hex[:16].upper(),
                                "sessionContext": {"sessionIssuer": {"type": "Role", "principalId": pid.split(":")[0], "arn": "arn:aws:iam::123456789012:role/%s" % name, "accountId": "123456789012", "userName": name},
                                                   "attributes": {"creationDate": "2024-11-05T%02d:%02d:%02dZ" % (sec // 3600 % 24, sec // 60 % 60, sec % 60), "mfaAuthenticated": "false"}}},
               "eventTime": "2024-11-05T%02d:%02d:%02dZ" % (sec // 3600 % 24, sec // 60 % 60, sec % 60),
               "eventSource": src, "eventName": ev, "awsRegion": "eu-west-1",
               "sourceIPAddress": random.choice(ips), "userAgent": random.choice(agents),
               "requestParameters": {"bucketName": "logs-%d" % random.randint(1, 5), "key": "vpc/AWSLogs/123456789012/vpcflowlogs/eu-west-1/2024/11/05/%08x.log.gz" % random.getrandbits(32), "Host": "logs.s3.eu-west-1.amazonaws.com"} if src.startswith("s3") else {"roleArn": "arn:aws:iam::123456789012:role/%s" % name, "roleSessionName": uuid.uuid4().hex[:12]},
               "responseElements": None,
               "additionalEventData": {"SignatureVersion": "SigV4", "CipherSuite": "TLS_AES_128_GCM_SHA256", "bytesTransferredIn": 0, "AuthenticationMethod": "AuthHeader", "x-amz-id-2": uuid.uuid4().hex + uuid.uuid4().hex, "bytesTransferredOut": random.randint(100, 9000000)},
               "requestID": uuid.uuid4().hex[:16].upper(), "eventID": str(uuid.uuid4()), "readOnly": ro,
               "resources": [{"type": "AWS::S3::Object", "ARN": "arn:aws:s3:::logs/%08x" % random.getrandbits(32)}],
               "eventType": "AwsApiCall", "managementEvent": not src.startswith("s3"), "recipientAccountId": "123456789012",
               "eventCategory": "Data" if src.startswith("s3") else "Management",
               "tlsDetails": {"tlsVersion": "TLSv1.3", "cipherSuite": "TLS_AES_128_GCM_SHA256", "clientProvidedHostHeader": "%s" % src}}
        emit(("" if first else ",") + json.dumps(rec, separators=(",", ":")))
        first = False
    emit("]}\n")
elif kind == "access":
    # S3 server access logs / web access logs: varied clients and paths.
    ips = ["%d.%d.%d.%d" % (random.randint(1, 223), random.randint(0, 255), random.randint(0, 255), random.randint(1, 254)) for _ in range(5000)]
    paths = ["/api/v1/orders/%d" % i for i in range(2000)] + ["/static/app.%08x.js" % random.getrandbits(32) for _ in range(50)] + ["/", "/login", "/healthz"]
    agents = ["Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.6 Mobile/15E148 Safari/604.1", "curl/8.5.0", "python-requests/2.32.3", "Go-http-client/2.0"]
    t = 0
    while written < size:
        t += random.choice((0, 0, 1))
        emit('%s - - [05/Nov/2024:%02d:%02d:%02d +0000] "%s %s HTTP/1.1" %d %d "-" "%s" %.3f %s\n' % (
            zipf_pick(ips, 1.1), t // 3600 % 24, t // 60 % 60, t % 60, random.choice(("GET", "GET", "GET", "POST")), zipf_pick(paths, 1.1),
            random.choice((200, 200, 200, 200, 304, 404, 500)), random.randint(0, 90000), random.choice(agents), random.random() * 2, uuid.uuid4().hex[:16]))
elif kind == "jsonl":
    # Structured application logs, one JSON object per line (tracing / bunyan style).
    msgs = ["Request handled.", "Cache miss.", "Retrying after throttling.", "Thumbnail written.", "Connection reset by peer.", "User logged in."]
    t = 0
    while written < size:
        t += random.randint(0, 40)
        emit(json.dumps({"timestamp": "2024-11-05T10:%02d:%02d.%03dZ" % (t // 60000 % 60, t // 1000 % 60, t % 1000), "level": random.choice(("INFO", "INFO", "INFO", "WARN", "DEBUG")),
                         "fields": {"message": random.choice(msgs), "bucket": "photos", "key": "uploads/%06d.jpg" % random.randint(0, 999999), "bytes": random.randint(1000, 9000000), "duration_ms": random.randint(1, 3000)},
                         "target": "thumbnail_on_create", "span": {"event_id": str(uuid.uuid4()), "name": "event"}, "threadId": "ThreadId(%d)" % random.randint(1, 8)}, separators=(",", ":")) + "\n")
elif kind == "healthcheck":
    # The most repetitive real log: a load balancer's health checks, only the time changes.
    t = 0
    while written < size:
        t += 1
        for node in range(3):
            emit('10.0.%d.17 - - [05/Nov/2024:%02d:%02d:%02d +0000] "GET /healthz HTTP/1.1" 200 2 "-" "ELB-HealthChecker/2.0" 0.001\n' % (node, t // 3600 % 24, t // 60 % 60, t % 60))
elif kind == "vpc-idle":
    # An idle VPC: mostly NODATA records, one per interface a minute.
    enis = ["eni-%017x" % random.getrandbits(68) for _ in range(40)]
    t = 1730800000
    while written < size:
        t += 60
        for eni in enis:
            if random.random() < 0.9:
                emit("2 123456789012 %s - - - - - - - %d %d - NODATA\n" % (eni, t, t + 60))
            else:
                emit("2 123456789012 %s 10.0.0.5 10.0.0.%d 123 123 17 1 76 %d %d ACCEPT OK\n" % (eni, random.randint(1, 3), t, t + 60))
elif kind == "debug":
    # Chatty debug JSON: ten steps per request, only the time changing within one.
    t = 0
    while written < size:
        rid = str(uuid.uuid4())
        for step in ("Request received.", "Reading object.", "Object read.", "Decoding.", "Decoded.", "Resizing.", "Resized.", "Writing thumbnail.", "Thumbnail written.", "Request done."):
            t += random.randint(0, 3)
            emit(json.dumps({"timestamp": "2024-11-05T10:%02d:%02d.%03dZ" % (t // 60000 % 60, t // 1000 % 60, t % 1000), "level": "DEBUG", "fields": {"message": step}, "target": "thumbnail_on_create::pipeline", "span": {"request_id": rid, "name": "event"}}, separators=(",", ":")) + "\n")
elif kind == "crashloop":
    # The most repetitive real log found: a crash loop's same stack trace, only the time changing.
    trace = "java.lang.IllegalStateException: Connection pool shut down\n" + "".join("\tat com.example.service.Module%d.call(Module%d.java:%d)\n" % (i, i, 40 + i) for i in range(60))
    t = 0
    while written < size:
        t += 7
        emit("2024-11-05T10:%02d:%02d.%03dZ ERROR [main] c.e.s.Worker - request failed\n" % (t // 60000 % 60, t // 1000 % 60, t % 1000) + trace)
else:
    sys.exit("unknown kind " + kind)
PY
}

ratio() { python3 -c "import sys; print('%.1f' % (int(sys.argv[1]) / int(sys.argv[2])))" "$@"; }

printf '%-12s %10s %10s\n' kind 'gzip -6' 'gzip -9'
for kind in vpc vpc-idle cloudtrail access jsonl debug healthcheck crashloop; do
  file="$work/$kind.log"
  [ -s "$file" ] || generate "$kind" "$size" >"$file"
  whole=$(stat -c %s "$file")
  printf '%-12s %9sx %9sx\n' "$kind" "$(ratio "$whole" "$(gzip -6 -c "$file" | wc -c)")" \
    "$(ratio "$whole" "$(gzip -9 -c "$file" | wc -c)")"
done
printf '%-12s %9sx\n' 'one byte' "$(ratio 1073741824 "$(head -c 1073741824 /dev/zero | gzip -9 | wc -c)")"

# Throughput: eight copies of the flow logs, gzipped (512 MB of content at the default size).
flows="$work/storage/bench/flows.log.gz"
if [ ! -s "$flows" ]; then
  for _ in 1 2 3 4 5 6 7 8; do cat "$work/vpc.log"; done | gzip -6 >"$flows"
fi
content=$(zcat "$flows" | wc -c)
cpu() { /usr/bin/time -f '%U %S' "$@" 2>&1 >/dev/null | tail -1 | awk '{print $1 + $2}'; }
zcat_s=$(cpu sh -c "zcat '$flows'")
ours_s=$(cpu env -i PATH="$PATH" FORWARD_MODE=content FORWARD_SINK=file FORWARD_FILE=/dev/null \
  RUST_LOG=warn "$binary" sweep --bucket bench --key flows.log.gz --storage "$work/storage")
gzip_s=$(cpu sh -c "zcat '$flows' | gzip -6 >/dev/null")
python3 - "$content" "$zcat_s" "$ours_s" "$gzip_s" "${MEMORY_MB:-512}" "${TIMEOUT_SECS:-900}" \
  "${CONCURRENCY:-4}" <<'PY'
import sys
content, zcat_s, ours_s, gzip_s = int(sys.argv[1]), *map(float, sys.argv[2:5])
memory, timeout, concurrency = map(int, sys.argv[5:8])
mb = content / 1e6
# gzip -6 ran on zcat's output: take zcat's share off.
gzip_only = max(gzip_s - zcat_s, 0.001)
ours, kafka = mb / ours_s, 1 / (ours_s / mb + gzip_only / mb)
share = min(memory / 1769, 1.0)  # Lambda: one vCPU at 1769 MB
print("\n%.0f MB of flow logs, CPU seconds (one core):" % mb)
print("  zcat                          %6.2f s  %6.1f MB/s" % (zcat_s, mb / zcat_s))
print("  content mode -> file sink     %6.2f s  %6.1f MB/s" % (ours_s, ours))
print("  gzip -6 of the content        %6.2f s  %6.1f MB/s" % (gzip_only, mb / gzip_only))
print("  content mode + gzip (Kafka)             %6.1f MB/s" % kafka)
# The sweep's stop plan (shared/src/sweep/plan.rs): objects are told to stop this long before
# the deadline, leaving time to wrap up a batch and save the checkpoint.
usable = timeout - min(2, timeout / 5) - min(1, timeout / 10)
for name, rate in (("uncompressed sink", ours), ("KAFKA_COMPRESSION=gzip", kafka)):
    at = rate * share
    print("at %d MB (%.2f vCPU), %s: %.1f MB/s; %d objects at once within %d s: %.0f MB each"
          % (memory, share, name, at, concurrency, usable, at * usable / concurrency))
PY
