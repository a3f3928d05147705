"""The small programs the e2e parts need besides curl: quoting, reading what the functions
answered and produced, and a K_SINK receiver. Run with the repo venv's `python` (need_venv):
only `amqp-take` needs a package from it (pika), and imports it itself.

    e2e_tool.py urlquote TEXT                       TEXT percent-encoded for a URL path
    e2e_tool.py xml-text TEXT                       TEXT as XML character data
    e2e_tool.py lambda-answer < ANSWER              cargo lambda invoke's answer, in one word
    e2e_tool.py amqp-take URL QUEUE                 every message on QUEUE, as JSON lines
    e2e_tool.py stub-seed API < RECORDS             MediaHaven records for the stubs to hold
    e2e_tool.py mediahaven-deletes API ID...        the stubs deleted exactly IDs, in order
    e2e_tool.py archived-once MESSAGES ESSENCE_PID  the file-transfer requests of the Lambda pass
    e2e_tool.py claims-once CLAIMS                  one claim id per object version
    e2e_tool.py http-outputs MESSAGES CLAIMS KEY    KEY archived once and claimed once over HTTP
    e2e_tool.py k-sink PORT OUT                     a Broker that refuses once, then records
    e2e_tool.py k-sink-got OUT                      the K_SINK received the adapter's claim

The checks exit 1 with what they found on stderr.
"""

import collections
import http.server
import json
import re
import sys
import urllib.parse
import urllib.request
from html import escape

# The objects the samples name that the lambda part stores (see 10-lambda-local.sh).
IMAGE_KEY = "photos/2024/summer beach + café ☀.jpg"
ESSENCE_KEY = "191213-VAN statement+1.MXF"


def urlquote(text):
    """S3 paths in curl's URL: the keys hold spaces, `+` and non-ASCII letters."""
    print(urllib.parse.quote(text))


def xml_text(text):
    """How a key appears inside a sidecar's XML element, for grep -F."""
    print(escape(text, quote=False))


def lambda_answer():
    """`done` (every record), the error type of a failed invocation, or `failed:ID,...` for
    the records of a batch that failed (S3 Batch tasks as RESULTCODE:TASKID): the words of
    tests/outcomes.tsv."""
    text = sys.stdin.read()
    error = re.match(r"\s*Error: (\S+)", text)
    if error:
        print(error.group(1))
        return
    answer = json.loads(text)
    failed = [f["itemIdentifier"] for f in answer.get("batchItemFailures", [])]
    failed += [r["resultCode"] + ":" + r["taskId"] for r in answer.get("results", [])
               if r["resultCode"] != "Succeeded"]
    print("failed:" + ",".join(failed) if failed else "done")


def amqp_take(url, queue):
    """The consumer side of sidecar-on-create's file-transfer requests, with the properties
    the transfer service relies on."""
    import pika

    channel = pika.BlockingConnection(pika.URLParameters(url)).channel()
    while True:
        method, props, body = channel.basic_get(queue, auto_ack=True)
        if method is None:
            break
        print(json.dumps({"body": json.loads(body), "correlation_id": props.correlation_id,
                          "delivery_mode": props.delivery_mode,
                          "content_type": props.content_type}))


def stub_seed(api):
    """Records the MediaHaven stub then holds, as cleanup-on-remove will search them."""
    request = urllib.request.Request(api + "/_stub/records", data=sys.stdin.read().encode(),
                                     headers={"content-type": "application/json"})
    urllib.request.urlopen(request)


def mediahaven_deletes(api, *expected):
    """cleanup-on-remove deleted exactly these MediaHaven records, in this order."""
    seen = json.loads(urllib.request.urlopen(api + "/_stub/seen").read())
    ids = [d[0] for d in seen["deletes"]]
    if ids != list(expected):
        sys.exit(f"MediaHaven deletes: {ids}")


def archived_once(messages_file, essence_pid):
    """One file-transfer request per created object, persistent, JSON, with a correlation id;
    the essence's names the gateway's domain and the sidecar's PID in its destination."""
    messages = [json.loads(line) for line in open(messages_file)]
    keys = sorted(m["body"]["source"]["object"]["key"] for m in messages)
    essence = next((m for m in messages
                    if m["body"]["source"]["bucket"]["name"] == "mam-highresvideo"), None)
    destination = f"/mnt/STORAGE/INGEST/SIDECAR/VRT/DISK-SHARE-EVENTS/{essence_pid}.MXF"
    ok = (keys == sorted([ESSENCE_KEY, IMAGE_KEY]) and essence is not None
          and essence["body"]["source"]["domain"]["name"] == "s3.archive.example"
          and essence["body"]["destination"]["path"] == destination
          and all(m["delivery_mode"] == 2 and m["content_type"] == "application/json"
                  and m["correlation_id"] for m in messages))
    if not ok:
        sys.exit(f"unexpected messages: {json.dumps(messages)} essence PID {essence_pid}")


def claims_once(claims_file):
    """forward-to-stream's claim checks: one per object version the store holds (each is
    HEADed first: the objects only samples name are not in the S3 server, so nothing announces
    them), and the same object version always has the same CloudEvent id, whichever envelope
    brought it."""
    ids = collections.defaultdict(list)
    for line in open(claims_file):
        message = json.loads(line)
        claim = json.loads(message["body"])
        version = (claim["bucket"], claim["key"], claim.get("version_id"), claim.get("etag"))
        ids[version].append(message["headers"]["ce_id"])
    announced = {v[:2] for v in ids}
    assert ("media-uploads", IMAGE_KEY) in announced, sorted(map(str, ids))
    # Named by samples (SQS, GCS), never stored: no claim (the sweeps' claims are of what they
    # list).
    assert ("media-uploads", "video/東京 2024.mp4") not in announced, sorted(map(str, ids))
    split = {v: set(i) for v, i in ids.items() if len(set(i)) > 1}
    assert not split, f"one object version, several ids: {split}"
    # Several envelopes (S3, SQS, SNS, EventBridge...) announce the same version of one image:
    # the first forwards it, the rest find its forwarded marker, so each version is sent once.
    assert all(len(i) == 1 for i in ids.values()), {v: i for v, i in ids.items() if len(i) > 1}


def http_outputs(messages_file, claims_file, key):
    """The object announced in both CloudEvent modes: one file-transfer request, and one
    claim id per version (the PingSource's catch-up sweep announces the stored etag, the
    samples theirs)."""
    keys = [json.loads(line)["body"]["source"]["object"]["key"] for line in open(messages_file)]
    assert keys == [key], f"file-transfer requests: {keys}"
    ids = {}
    for line in open(claims_file):
        message = json.loads(line)
        claim = json.loads(message["body"])
        if claim["key"] == key:
            version = (claim.get("version_id"), claim.get("etag"))
            ids.setdefault(version, set()).add(message["headers"]["ce_id"])
    assert ids and all(len(i) == 1 for i in ids.values()), f"claim ids of {key}: {ids}"


def k_sink(port, out):
    """A CloudEvents receiver that answers 503 to the first delivery, as a Broker that is not
    ready yet does, then records what arrives as JSON lines."""
    refused = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            if not refused:
                refused.append(True)
                self.send_response(503)
                self.end_headers()
                return
            with open(out, "a") as f:
                f.write(json.dumps({"headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": body.decode()}) + "\n")
            self.send_response(202)
            self.end_headers()

    http.server.HTTPServer(("127.0.0.1", int(port)), Receiver).serve_forever()


def k_sink_got(out):
    """The K_SINK got the structured adapter sample's claim once, as a binary-mode CloudEvent
    with the overrides' extension."""
    events = [json.loads(line) for line in open(out)]
    assert len(events) == 1, events
    headers, claim = events[0]["headers"], json.loads(events[0]["body"])
    assert headers["ce-specversion"] == "1.0", headers
    assert headers["ce-type"] == "io.bucketfn.object.created", headers
    assert headers["ce-source"] == "s3://media-uploads" and headers["ce-cluster"] == "e2e", headers
    # The key travels percent-encoded in the header (HTTP binding) and as it is in the data.
    assert headers["ce-subject"] == "photos/adapter%20&%20co.jpg", headers["ce-subject"]
    assert urllib.parse.unquote(headers["ce-subject"]) == claim["key"], claim
    assert claim["key"] == "photos/adapter & co.jpg", claim
    assert headers["content-type"] == "application/json", headers


COMMANDS = {
    "urlquote": urlquote,
    "xml-text": xml_text,
    "lambda-answer": lambda_answer,
    "amqp-take": amqp_take,
    "stub-seed": stub_seed,
    "mediahaven-deletes": mediahaven_deletes,
    "archived-once": archived_once,
    "claims-once": claims_once,
    "http-outputs": http_outputs,
    "k-sink": k_sink,
    "k-sink-got": k_sink_got,
}

if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] not in COMMANDS:
        sys.exit(__doc__)
    COMMANDS[sys.argv[1]](*sys.argv[2:])
