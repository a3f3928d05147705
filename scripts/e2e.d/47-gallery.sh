# thumbnail-on-create's gallery as a person meets it: `serve --storage DIR` on a laptop, a
# browser (Playwright from PyPI driving Debian's headless chromium) uploads two images through
# the page, one without an extension, and sees both thumbnails arrive from the folder's own
# bucket events without a reload; the job button makes the thumbnail of an image that was there
# before; the history lists it all; Try one answers a thumbnail and stores nothing; Clear bucket
# empties the folder once the bucket's name is typed. Screenshots are kept in .cache/e2e/ (the
# docs/gallery.png of docs/thumbnail-on-create.md is one of them). Sourced by scripts/e2e.sh.
# Cold: chromium from apt and Playwright from PyPI (about a minute); the checks take seconds.

need_apt chromium
need_venv playwright==1.65.2

gal_dir=$(mktemp -d)
on_exit "rm -rf '$gal_dir'"
gal_shots="$E2E_REPO/.cache/e2e"
mkdir -p "$gal_shots" "$gal_dir/storage/photos" "$gal_dir/pick"

# What is in the bucket before serving is not an event: only the job button makes its thumbnail.
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$gal_dir/storage/photos/before.jpg"
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$gal_dir/pick/lake.jpg"
# The tutorial's upload (`--key dog$RANDOM`): an image known only by its bytes.
cp "$E2E_REPO/demo/photos/samples/lake at dawn.jpg" "$gal_dir/pick/dog12345"

gal_port=$(free_port)
gal_token=e2e-gallery-token-0123456789
PORT=$gal_port LISTEN_ADDRESS=127.0.0.1 EVENT_AUTH=none OPS_TOKEN=$gal_token \
  SOURCE_BUCKET=photos THUMBNAIL_SIZES=128,256 GALLERY_CLEAR=true \
  "$BUCKETFN_BIN/thumbnail-on-create" serve --storage "$gal_dir/storage" \
  >"$gal_dir/serve.log" 2>&1 &
on_exit "kill $!"
wait_port "$gal_port"

python "$E2E_REPO/scripts/lib/gallery_browser.py" "http://127.0.0.1:$gal_port" "$gal_token" \
  photos "$gal_dir/pick/lake.jpg" "$gal_dir/pick/dog12345" "$gal_shots" "$gal_dir/results" \
  >"$gal_dir/browser.log" 2>&1 || log "browser: $(tail -20 "$gal_dir/browser.log")"

# gal_step NAME: the browser passed this step.
gal_step() {
  grep -qxF "pass $1" "$gal_dir/results" 2>/dev/null && return 0
  log "$(grep -F "$1" "$gal_dir/results" 2>/dev/null || echo "not reached: $1")"
  return 1
}

for gal_name in \
  "the gallery opens, the earlier image N/A" \
  "two uploads, one without extension, get thumbnails in place" \
  "the job runner makes the earlier image's thumbnails" \
  "the history lists the uploads' events and the sweep" \
  "Try one shows a thumbnail and stores nothing" \
  "the page fits a phone without sideways scrolling" \
  "Clear bucket asks for the name, then empties it" \
  "the page's script ran without errors"; do
  check "gallery: $gal_name" gal_step "$gal_name"
done

# What the page said is what the folder holds: nothing left under the bucket but hidden state.
gal_folder_is_empty() {
  local left
  left=$(cd "$gal_dir/storage/photos" && find . -type f -not -path '*/.*' | head -5)
  [ -z "$left" ] || { log "left in the bucket after clearing: $left"; return 1; }
}
check "gallery: the cleared bucket's folder holds no images or thumbnails" gal_folder_is_empty
