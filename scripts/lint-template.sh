#!/usr/bin/env bash
# Lints template.yaml (AWS SAM) with cfn-lint, twice: as written, and as CloudFormation after
# the SAM transform (what `sam deploy` hands CloudFormation), because cfn-lint checks SAM
# resources only against SAM's loose schema and would miss a wrong property of an event
# source. Both must report nothing: any error or warning fails. Installs cfn-lint and
# aws-sam-translator into the repo's ignored .cache/venv (about 20 s cold).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
log() { printf '[lint-template] %s\n' "$*" >&2; }
need_venv cfn-lint==1.58.0 aws-sam-translator==1.115.0

cfn-lint template.yaml

transformed=$(mktemp --suffix=.json)
trap 'rm -f "$transformed"' EXIT
# The transform needs a region (only for ARNs it would build) and wants packaged code, so
# every local CodeUri becomes the s3:// URI `sam deploy` would have uploaded it to.
AWS_DEFAULT_REGION=eu-west-1 python - template.yaml "$transformed" <<'PY'
import json, sys
from cfnlint.decode import decode
from samtranslator.model.exceptions import InvalidDocumentException
from samtranslator.translator.transform import transform

template, problems = decode(sys.argv[1])
if problems:
    sys.exit("\n".join(str(p) for p in problems))
for resource in template["Resources"].values():
    if resource["Type"] == "AWS::Serverless::Function":
        folder = resource["Properties"]["CodeUri"].rstrip("/").rsplit("/", 1)[-1]
        resource["Properties"]["CodeUri"] = f"s3://packaged-artifacts/{folder}.zip"


class NoManagedPolicies:
    """The template names no managed policy, so none needs looking up."""

    def load(self):
        return {}


try:
    cloudformation = transform(json.loads(json.dumps(template)), {}, NoManagedPolicies())
except InvalidDocumentException as e:
    sys.exit("\n".join(f"SAM transform: {cause.message}" for cause in e.causes))
with open(sys.argv[2], "w") as out:
    json.dump(cloudformation, out, indent=1)
PY
cfn-lint "$transformed"

# cfn-lint has no rule for it, so checked here on what CloudFormation will create: no IAM
# statement grants anything on every resource (`*`, or `*` for the bucket or the account).
python - "$transformed" <<'PY'
import json, re, sys

resources = json.load(open(sys.argv[1]))["Resources"]
too_wide = re.compile(r"^(\*|arn:[^:]*:[^:]*:[^:]*:[^:]*:\*|arn:[^:]*:s3:::\*)$")


def texts(value):
    """Every literal string in a resource value, Fn::Sub templates included."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from texts(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from texts(item)


wide = []
for name, resource in resources.items():
    for policy in resource.get("Properties", {}).get("Policies", []):
        for statement in policy["PolicyDocument"]["Statement"]:
            for text in texts(statement.get("Resource", [])):
                if too_wide.match(text):
                    wide.append(f"{name}: {statement.get('Sid', '?')} grants {text!r}")
if wide:
    sys.exit("IAM statements on every resource:\n  " + "\n  ".join(wide))
PY
log "template.yaml: cfn-lint found nothing, before and after the SAM transform; no IAM statement on *"
