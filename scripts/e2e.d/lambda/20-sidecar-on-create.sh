# sidecar-on-create's outputs after the Lambda pass of scripts/e2e.d/10-lambda-local.sh,
# which sources this file: sidecars on the FTP server and file-transfer requests on RabbitMQ.
# Defines lam_sidecar_of for the later parts.

# The sidecar of key $1 on the FTP server (one file), or nothing.
lam_sidecar_of() {
  local text
  text=$(e2e_tool xml-text "$1")
  grep -lF "<s3_object_key>$text</s3_object_key>" "$lam_dir"/ftp/VRT/DISK-SHARE-EVENTS/*.xml 2>/dev/null
}

# Both created objects were archived once however many samples named them: one sidecar each,
# one file-transfer request each, persistent and with a correlation id, naming the sidecar's PID.
lam_archived_once() {
  local essence image
  essence=$(lam_sidecar_of "$lam_essence_key")
  image=$(lam_sidecar_of "$lam_image_key")
  [ "$(wc -l <<<"$essence")" = 1 ] && [ "$(wc -l <<<"$image")" = 1 ] ||
    { log "sidecars: essence [$essence], image [$image]"; return 1; }
  grep -q "<CP_id>OR-rf5kf25</CP_id>" "$essence" &&
    grep -q "<md5>77930bf06b236e089a22a255e6b28377</md5>" "$essence" ||
    { log "essence sidecar: $(cat "$essence")"; return 1; }
  e2e_tool amqp-take "$lam_amqp_url" filetransfer >"$lam_dir/messages.jsonl"
  e2e_tool archived-once "$lam_dir/messages.jsonl" "$(basename "$essence" .xml)"
}
check "sidecar-on-create: one sidecar on FTP and one request on RabbitMQ per created object" \
  lam_archived_once
