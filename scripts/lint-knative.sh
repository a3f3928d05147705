#!/usr/bin/env bash
# Checks deploy/knative/ offline: no Kubernetes validator for Knative's resources installs from
# the registries here, so this parses every manifest (PyYAML, in the repo's ignored
# .cache/venv) and checks what would otherwise fail only in a cluster, against the code:
# the kustomization lists every file; names that refer to each other (Trigger -> Broker and
# Service, PingSource -> Broker and the Trigger that picks its pings) resolve; probes use the
# route the HTTP runtime serves; every Trigger's type filter is a type our CloudEvent decoder
# accepts; every Service runs as non-root and the images are the functions'.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
need_venv pyyaml

python - deploy/knative shared/src/runtime/http.rs shared/src/event/cloudevent.rs <<'PY'
import pathlib, re, sys
import yaml

folder, http_rs, cloudevent_rs = map(pathlib.Path, sys.argv[1:])
problems = []
functions = {p.parent.name for p in pathlib.Path("functions").glob("*/Cargo.toml")}

# What the code accepts: the health route, and the CloudEvent types the decoder names.
health = re.search(r'\.route\("(/healthz)"', http_rs.read_text())
if not health:
    problems.append(f"{http_rs}: no /healthz route, which the probes use")
code = cloudevent_rs.read_text()
type_prefixes = re.findall(r'ty\.starts_with\("([^"]+)"\)', code)
exact_types = re.findall(r'ty == "([^"]+)"', code)


def accepted(kind, value):
    if kind == "prefix":
        return any(value.startswith(p) for p in type_prefixes)
    return value in exact_types or any(value.startswith(p) for p in type_prefixes)


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


for name, (where, svc) in docs.get("Service", {}).items():
    spec = svc["spec"]["template"]["spec"]
    for c in spec["containers"]:
        image = c.get("image", "")
        if image.removeprefix("bucketfn/") not in functions:
            problems.append(f"{where}: image {image!r} is none of bucketfn/{{{','.join(sorted(functions))}}}")
        for probe in ("readinessProbe", "livenessProbe"):
            path = c.get(probe, {}).get("httpGet", {}).get("path")
            if not health or path != health.group(1):
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

pinged = set()
for name, (where, trigger) in docs.get("Trigger", {}).items():
    spec = trigger["spec"]
    ref_name(where, {"kind": "Broker", "name": spec.get("broker")}, "Broker")
    ref_name(where, spec["subscriber"]["ref"], "Service")
    sink = spec.get("delivery", {}).get("deadLetterSink", {}).get("ref")
    if sink is None:
        problems.append(f"{where}: no deadLetterSink")
    else:
        ref_name(where, sink, "Broker")
    filters = spec.get("filters", [])
    types = list(type_filters(filters))
    if not types:
        problems.append(f"{where}: filters on no CloudEvent type")
    for dialect, value in types:
        if not accepted(dialect, value):
            problems.append(f"{where}: type {dialect} {value!r} is not one the decoder accepts")
    for f in filters:
        source = f.get("suffix", {}).get("source", "")
        if source.startswith("/pingsources/"):
            pinged.add((spec.get("broker"), source.removeprefix("/pingsources/")))

for name, (where, ping) in docs.get("PingSource", {}).items():
    broker = ref_name(where, ping["spec"]["sink"]["ref"], "Broker")
    if (broker, name) not in pinged:
        problems.append(f"{where}: no Trigger on Broker {broker!r} picks its pings")

if problems:
    sys.exit("deploy/knative:\n  " + "\n  ".join(problems))
counts = ", ".join(f"{len(v)} {k}" for k, v in sorted(docs.items()))
print(f"[lint-knative] deploy/knative: {counts}; nothing to report", file=sys.stderr)
PY
