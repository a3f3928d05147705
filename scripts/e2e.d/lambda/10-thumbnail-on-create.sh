# thumbnail-on-create's outputs after the Lambda pass of scripts/e2e.d/10-lambda-local.sh,
# which sources this file: the image's thumbnails in S3. Defines lam_thumbnails_answer for the
# later parts.

# lam_thumbnails_answer CODE [KEY]: S3 answers GETs of both thumbnails of KEY (default: the
# samples' image) with HTTP CODE.
lam_thumbnails_answer() {
  local size
  for size in 128 256; do
    lam_s3_expect "$1" GET media-uploads "thumbnails/${2:-$lam_image_key}/$size.jpg" || return 1
  done
}
# Removal samples arrived while the image was still there: they are stale, its thumbnails stay.
check "the image's thumbnails are in S3, and stale removals left them there" lam_thumbnails_answer 200
