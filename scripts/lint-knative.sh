#!/usr/bin/env bash
# Checks deploy/knative/ offline: no Kubernetes validator for Knative's resources installs from
# the registries here, so this parses every manifest (PyYAML, in the repo's ignored
# .cache/venv) and checks what would otherwise fail only in a cluster, against the code:
# the kustomization lists every file; names that refer to each other (Trigger -> Broker and
# Service, PingSource -> Broker and the Trigger that picks its pings) resolve; probes use the
# route the HTTP runtime serves; every Trigger's type filter is a type our CloudEvent decoder
# accepts (both as the Service's function binary describes them: `FUNCTION describe`); every
# Service runs as non-root and the images are the functions'. And that nothing
# is open by default: every Service is cluster-local and checks deliveries (EVENT_AUTH from the
# ConfigMap bucketfn-auth, its OIDC_AUDIENCE the audience its Triggers ask tokens for); every
# retry waits (Eventing's linear backoff waits 0 s before the first); and no file in the
# repository mentions Eventing's removed Trigger-filters feature flag.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
need_venv pyyaml
# The binaries the manifests run, to ask them; the same build as scripts/e2e.sh's.
cargo build --workspace --bins --quiet

python - deploy/knative "${CARGO_TARGET_DIR:-target}/debug" <<'PY'
import json, pathlib, re, subprocess, sys
import yaml

folder, bin_dir = map(pathlib.Path, sys.argv[1:])
problems = []
functions = {p.parent.name for p in pathlib.Path("functions").glob("*/Cargo.toml")}


def describe(function):
    """What the function's binary accepts: the CloudEvent types its decoder reads by name
    (exact and prefixes) and the route its health probe answers on."""
    out = subprocess.run([bin_dir / function, "describe"], capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out)


described = {f: describe(f) for f in functions}


def accepted(function, kind, value):
    types = described[function]["cloudevent_types"]
    by_prefix = any(value.startswith(p) for p in types["prefixes"])
    if kind == "prefix":
        return by_prefix
    return value in types["exact"] or by_prefix


# Every variable name the runtime spells out, so that a misspelt auth variable fails here rather
# than as "not set" in the pod. Read from the source: no table in the code lists them (each is
# read where it is used, some only when another says so), so no binary could name them all.
runtime_names = set()
for rs in pathlib.Path("shared/src").rglob("*.rs"):
    runtime_names |= set(re.findall(r'"([A-Z][A-Z0-9_]+)"', rs.read_text()))
AUTH_PREFIXES = ("EVENT_", "OIDC_", "OPS_")
# Ports the queue-proxy and the profiler take in every Knative pod (Serving refuses them as
# containerPort, and a second listener on one of them fails to bind).
SERVING_PORTS = {8008, 8012, 8013, 8022, 9090, 9091}
AUTH_CONFIGMAP = "bucketfn-auth"


docs = {}
for path in sorted(folder.glob("*.yaml")):
    if path.name == "kustomization.yaml":
        continue
    for doc in yaml.safe_load_all(path.read_text()):
        where = f"{path.name}: {doc.get('kind')} {doc.get('metadata', {}).get('name')}"
        for field in ("apiVersion", "kind", "metadata"):
            if field not in doc:
                problems.append(f"{where}: no {field}")
        docs.setdefault(doc["kind"], {})[doc["metadata"]["name"]] = (where, doc)

kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
listed = set(kustomization.get("resources", []))
present = {p.name for p in folder.glob("*.yaml")} - {"kustomization.yaml"}
if listed != present:
    problems.append(f"kustomization.yaml lists {sorted(listed)}, the folder has {sorted(present)}")


auth = docs.get("ConfigMap", {}).get(AUTH_CONFIGMAP)
if auth is None:
    problems.append(f"no ConfigMap {AUTH_CONFIGMAP}, which every Service reads EVENT_AUTH from")
else:
    where, configmap = auth
    data = configmap.get("data", {})
    scheme = data.get("EVENT_AUTH")
    if scheme not in ("token", "oidc"):
        problems.append(f"{where}: EVENT_AUTH {scheme!r}: the manifests must check deliveries "
                        "(oidc, or token); none is a site's explicit choice, not a default")
    if scheme == "oidc" and not data.get("OIDC_ISSUER"):
        problems.append(f"{where}: EVENT_AUTH oidc without OIDC_ISSUER")
    for name in data:
        if name not in runtime_names:
            problems.append(f"{where}: {name} is a variable no code in shared/src reads")


def seconds(duration):
    m = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", str(duration))
    if not m or not any(m.groups()):
        return None
    h, mins, s = m.groups()
    return int(h or 0) * 3600 + int(mins or 0) * 60 + float(s or 0)


def check_backoff(where, delivery):
    """Eventing waits backoffDelay * 2^n (exponential) or * n (linear) before retry n, counting
    n from 0, and 0 s without both fields: linear's first retry comes at once."""
    retries = int(delivery.get("retry", 0))
    if retries < 1:
        return
    policy, delay = delivery.get("backoffPolicy"), delivery.get("backoffDelay")
    if policy != "exponential":
        problems.append(f"{where}: retry {retries} with backoffPolicy {policy!r}: the first retry "
                        "waits 0 s (Eventing counts it as n = 0); use exponential")
    elif not seconds(delay):
        problems.append(f"{where}: backoffDelay {delay!r} is no wait (an ISO 8601 PT...S period)")


def ref_name(where, ref, kind):
    if ref.get("kind") != kind:
        problems.append(f"{where}: refers to a {ref.get('kind')}, expected a {kind}")
    elif ref.get("name") not in docs.get(kind, {}):
        problems.append(f"{where}: refers to {kind} {ref.get('name')!r}, which no file defines")
    return ref.get("name")


def type_filters(filters):
    for f in filters:
        for dialect, body in f.items():
            if dialect in ("all", "any"):
                yield from type_filters(body)
            elif dialect in ("exact", "prefix") and "type" in body:
                yield dialect, body["type"]


audiences = {}
for name, (where, svc) in docs.get("Service", {}).items():
    labels = svc["metadata"].get("labels", {})
    if labels.get("networking.knative.dev/visibility") != "cluster-local":
        problems.append(f"{where}: no label networking.knative.dev/visibility: cluster-local, "
                        "so the ingress routes it from outside the cluster")
    spec = svc["spec"]["template"]["spec"]
    for c in spec["containers"]:
        env_from = c.get("envFrom") or [{}]
        if env_from[0].get("configMapRef", {}).get("name") != AUTH_CONFIGMAP:
            problems.append(f"{where}: envFrom does not start with ConfigMap {AUTH_CONFIGMAP} "
                            "(first, so that the function's own ConfigMap can override it)")
        image = c.get("image", "")
        if image.removeprefix("bucketfn/") not in functions:
            problems.append(f"{where}: image {image!r} is none of bucketfn/{{{','.join(sorted(functions))}}}")
        health = described.get(image.removeprefix("bucketfn/"), {}).get("health_route")
        for probe in ("readinessProbe", "livenessProbe"):
            path = c.get(probe, {}).get("httpGet", {}).get("path")
            if not health or path != health:
                problems.append(f"{where}: {probe} path {path!r} is not the runtime's health route")
        # Knative sets PORT from containerPort; setting it too is refused.
        if any(e["name"] == "PORT" for e in c.get("env", [])):
            problems.append(f"{where}: sets PORT, which Knative reserves")
        if c.get("securityContext", {}).get("runAsNonRoot") is not True:
            problems.append(f"{where}: does not require runAsNonRoot")
    timeout = spec.get("timeoutSeconds", 300)
    env = {e["name"]: e.get("value") for c in spec["containers"] for e in c.get("env", [])}
    if int(env.get("REQUEST_TIMEOUT_SECS", 280)) >= timeout:
        problems.append(f"{where}: REQUEST_TIMEOUT_SECS is not below timeoutSeconds ({timeout})")
    for var in env:
        if var.startswith(AUTH_PREFIXES) and var not in runtime_names:
            problems.append(f"{where}: {var} is a variable no code in shared/src reads")
    if "OPS_PORT" in env and int(env["OPS_PORT"]) in SERVING_PORTS:
        problems.append(f"{where}: OPS_PORT {env['OPS_PORT']} is one of Knative's own ports "
                        f"{sorted(SERVING_PORTS)}")
    audiences[name] = env.get("OIDC_AUDIENCE")
    if not audiences[name]:
        problems.append(f"{where}: no OIDC_AUDIENCE, which EVENT_AUTH=oidc needs")

pinged = set()
for name, (where, trigger) in docs.get("Trigger", {}).items():
    spec = trigger["spec"]
    ref_name(where, {"kind": "Broker", "name": spec.get("broker")}, "Broker")
    subscriber = spec["subscriber"]
    service = ref_name(where, subscriber["ref"], "Service")
    # The Broker sends a token only for an audience it knows, and a Knative Service need not
    # announce one: the Trigger names the one the Service checks.
    expected = audiences.get(service)
    if expected and subscriber.get("audience") != expected:
        problems.append(f"{where}: subscriber.audience {subscriber.get('audience')!r} is not "
                        f"Service {service}'s OIDC_AUDIENCE {expected!r}")
    check_backoff(where, spec.get("delivery", {}))
    sink = spec.get("delivery", {}).get("deadLetterSink", {}).get("ref")
    if sink is None:
        problems.append(f"{where}: no deadLetterSink")
    else:
        ref_name(where, sink, "Broker")
    filters = spec.get("filters", [])
    types = list(type_filters(filters))
    if not types:
        problems.append(f"{where}: filters on no CloudEvent type")
    # The types are those of the function the Trigger delivers to.
    _, target = docs.get("Service", {}).get(service, (None, None))
    containers = target["spec"]["template"]["spec"]["containers"] if target else []
    targets = sorted({c.get("image", "").removeprefix("bucketfn/") for c in containers} & functions)
    if types and not targets:
        problems.append(f"{where}: Service {service!r} runs no function, so its type filters "
                        "cannot be checked")
    for dialect, value in types:
        for function in targets:
            if not accepted(function, dialect, value):
                problems.append(f"{where}: type {dialect} {value!r} is not one {function}'s "
                                "decoder accepts")
    for f in filters:
        source = f.get("suffix", {}).get("source", "")
        if source.startswith("/pingsources/"):
            pinged.add((spec.get("broker"), source.removeprefix("/pingsources/")))

for name, (where, ping) in docs.get("PingSource", {}).items():
    broker = ref_name(where, ping["spec"]["sink"]["ref"], "Broker")
    if (broker, name) not in pinged:
        problems.append(f"{where}: no Trigger on Broker {broker!r} picks its pings")

for name, (where, broker) in docs.get("Broker", {}).items():
    check_backoff(where, broker.get("spec", {}).get("delivery", {}))

# Eventing 1.15 removed this flag (filters always apply): advice to set it misleads. Spelt in
# two, so that this file does not name it.
flag = ("new-trigger" + "-filters").encode()
listing = subprocess.run(["git", "ls-files", "-z"], capture_output=True, check=True).stdout
for tracked in filter(None, listing.decode().split("\0")):
    path = pathlib.Path(tracked)
    if not path.is_file():
        continue
    for n, line in enumerate(path.read_bytes().splitlines(), 1):
        if flag in line:
            problems.append(f"{tracked}:{n}: mentions {flag.decode()}, which Eventing 1.15 "
                            "removed (Trigger filters always apply)")

if problems:
    sys.exit("[lint-knative] problems:\n  " + "\n  ".join(problems))
counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(docs.items()))
print(f"[lint-knative] deploy/knative: {counts}; nothing to report", file=sys.stderr)
PY
