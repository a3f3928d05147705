# cleanup-on-remove after the Lambda pass of scripts/e2e.d/10-lambda-local.sh, which sources
# this file: the objects go, then their removal events arrive, and what was made of them goes
# (thumbnails, and the essence's records in MediaHaven), nothing else.

lam_removed_everything() {
  local name
  lam_s3_expect 204 DELETE media-uploads "$lam_image_key" || return 1
  [ "$(lam_answer <<<"$(lam_invoke cleanup-on-remove "$E2E_REPO/events/aws-s3/removed.json")")" = "done" ] ||
    return 1
  lam_thumbnails_answer 404 || return 1
  # The essence: thumbnails of its own, other files beside them, and records in MediaHaven.
  for name in 256.jpg 64.webp notes.txt x.jpg/256.jpg; do
    lam_s3_expect 200 PUT mam-highresvideo "thumbnails/$lam_essence_key/$name" --data-binary t ||
      return 1
  done
  e2e_tool stub-seed "$lam_api" <<JSON
[{"fragment_id": "ESSENCE", "is_fragment": false,
  "fields": {"s3_object_key": "$lam_essence_key", "s3_bucket": "mam-highresvideo"}},
 {"fragment_id": "FRAGMENT", "is_fragment": true,
  "fields": {"s3_object_key": "$lam_essence_key", "s3_bucket": "mam-highresvideo",
             "dc_identifier_localid": "M1"}},
 {"fragment_id": "SUBS", "is_fragment": false, "fields": {"dc_identifier_localid": "M1"}}]
JSON
  lam_s3_expect 204 DELETE mam-highresvideo "$lam_essence_key" || return 1
  [ "$(lam_answer <<<"$(lam_invoke cleanup-on-remove "$E2E_REPO/events/gateway/removed.json")")" = "done" ] ||
    return 1
  lam_s3_expect 404 GET mam-highresvideo "thumbnails/$lam_essence_key/256.jpg" &&
    lam_s3_expect 404 GET mam-highresvideo "thumbnails/$lam_essence_key/64.webp" &&
    lam_s3_expect 200 GET mam-highresvideo "thumbnails/$lam_essence_key/notes.txt" &&
    lam_s3_expect 200 GET mam-highresvideo "thumbnails/$lam_essence_key/x.jpg/256.jpg" || return 1
  e2e_tool mediahaven-deletes "$lam_api" SUBS ESSENCE
}
check "cleanup-on-remove: thumbnails and MediaHaven collateral and essence go, nothing else" \
  lam_removed_everything
