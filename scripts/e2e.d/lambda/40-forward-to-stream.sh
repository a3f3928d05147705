# forward-to-stream's outputs after the Lambda pass of scripts/e2e.d/10-lambda-local.sh,
# which sources this file: the claim checks in its file sink.

# One claim per object version the store holds, and one CloudEvent id per version, whichever
# envelope brought it (the rules are e2e_tool.py's claims-once).
check "forward-to-stream: claim checks written, one id per object version" \
  e2e_tool claims-once "$lam_claims"
