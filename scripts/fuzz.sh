#!/usr/bin/env bash
# Fuzzes the event decoders and thumbnail-on-create's image pipeline with AFL++ through
# cargo-afl, on the stable toolchain: each target for SECONDS (default 600), one after another.
# Installs cargo-afl into the cache (its build builds AFL++ from the source it ships, offline),
# builds the targets in fuzz/, makes the seed corpus and dictionaries under .cache/fuzz/, and
# exits non-zero when any target found a crash or a hang, printing each input and its panic.
#
# usage: scripts/fuzz.sh [TARGET|all] [SECONDS]
#   decode_event   bucketfn::event::decode (header lines, blank line, body) and decode_value
#   image_header   pipeline::decode_need under three configurations
#   thumbnails     pipeline::make_thumbnails, 1 MP cap, 64 MiB budget, 1 s deadline
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh

all=(decode_event image_header thumbnails)
target=${1:-all}
seconds=${2:-600}
case $target in
  all) targets=("${all[@]}") ;;
  decode_event | image_header | thumbnails) targets=("$target") ;;
  *)
    echo "usage: scripts/fuzz.sh [decode_event|image_header|thumbnails|all] [SECONDS]" >&2
    exit 2
    ;;
esac

# cargo-afl keeps the AFL++ it builds in its XDG data folder: that goes into the cache too.
export XDG_DATA_HOME="$E2E_CACHE/share"
# The same release as the `afl` crate in fuzz/Cargo.toml.
need_cargo_bin cargo-afl cargo-afl 0.18.2
# cargo install builds AFL++ in cargo-afl's build script; if that failed (it only warns), or the
# toolchain changed since, this builds it. Already built is fine.
if ! out=$(cargo afl config --build 2>&1); then
  grep -q "already built" <<<"$out" || {
    echo "$out" >&2
    exit 1
  }
fi

log "cargo afl build --release (fuzz/)"
(cd fuzz && cargo afl build --release --quiet --bins)

work=.cache/fuzz
dictionaries="$XDG_DATA_HOME/afl.rs/AFLplusplus/dictionaries"

# Every sample in events/ is a seed, as an HTTP delivery: its headers file (if any), a blank
# line, its body. Tokens of the samples (keys, short values, header names) make the dictionary.
seed_events() {
  local dir=$1 file headers name
  mkdir -p "$dir/in"
  for file in events/*/*.json events/*/*.txt; do
    [ -f "$file" ] || continue
    headers=${file%.*}.headers
    name=$(basename "$(dirname "$file")")-$(basename "$file")
    {
      if [ -f "$headers" ]; then sed '/^[[:space:]]*$/d' "$headers"; fi
      echo
      cat "$file"
    } >"$dir/in/$name"
  done
  python3 - events "$dictionaries/json.dict" >"$dir/dict" <<'PY'
import json, pathlib, sys
tokens = set()
def walk(value):
    if isinstance(value, dict):
        for key, item in value.items():
            tokens.add(key)
            walk(item)
    elif isinstance(value, list):
        for item in value:
            walk(item)
    elif isinstance(value, str) and len(value) <= 40:
        tokens.add(value)
for path in pathlib.Path(sys.argv[1]).glob("*/*"):
    if path.suffix == ".json":
        try:
            walk(json.loads(path.read_text()))
        except ValueError:
            pass  # events/invalid/ holds what is not JSON on purpose
    elif path.suffix == ".headers":
        lines = path.read_text().splitlines()
        tokens.update(line.split(":")[0].strip() for line in lines if ":" in line)
def quote(token):
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else f"\\x{b:02x}"
                   for c in token for b in c.encode())
for token in sorted(t for t in tokens if t):
    print(f'"{quote(token)}"')
print(pathlib.Path(sys.argv[2]).read_text())
PY
}

# Tiny images of every format, and the format dictionaries AFL++ ships.
seed_images() {
  local dir=$1
  python3 fuzz/seeds.py "$dir/in"
  cat "$dictionaries"/{jpeg,png,gif,bmp,tiff,webp,exif,icc}.dict >"$dir/dict"
}

# One value from the statistics file afl-fuzz keeps up to date.
afl_stat() { sed -n "s/^$2 *: *//p" "$1/default/fuzzer_stats"; }

failed=0
for t in "${targets[@]}"; do
  dir=$work/$t
  rm -rf "$dir"
  mkdir -p "$dir"
  case $t in
    decode_event) seed_events "$dir" ;;
    *) seed_images "$dir" ;;
  esac
  # The whole pipeline gets its deadline's worth and more before a run counts as a hang, and
  # an address-space cap: a decode that needs far more than its budget then crashes.
  limits=(-t 1000 -m none)
  [ "$t" = thumbnails ] && limits=(-t 5000 -m 1024)
  log "afl-fuzz $t for ${seconds}s"
  # A container has no CPU frequency governor to check, core dumps may go to a pipe, and the
  # two cores are shared with other work, so no core is pinned.
  AFL_SKIP_CPUFREQ=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1 AFL_NO_AFFINITY=1 AFL_NO_UI=1 \
    cargo afl fuzz -V "$seconds" "${limits[@]}" -x "$dir/dict" -i "$dir/in" -o "$dir/out" \
    "fuzz/target/release/$t" >"$dir/afl.log" 2>&1 || {
    tail -30 "$dir/afl.log" >&2
    echo "fuzz: afl-fuzz failed for $t (log: $dir/afl.log)" >&2
    failed=1
    continue
  }
  out=$dir/out
  stats=()
  for name in execs_done execs_per_sec corpus_count bitmap_cvg stability saved_crashes \
    saved_hangs; do
    stats+=("$(afl_stat "$out" "$name")")
  done
  printf '%-13s %s execs (%s/s), corpus %s, edges %s, stability %s, crashes %s, hangs %s\n' \
    "$t" "${stats[@]}"
  for input in "$out"/default/crashes/id:* "$out"/default/hangs/id:*; do
    [ -f "$input" ] || continue
    failed=1
    echo "--- $input ($(stat -c %s "$input") bytes)"
    od -An -v -tx1 "$input" | tr -d ' \n' | head -c 2000
    echo
    # Outside afl-fuzz the target reads one input from standard input and panics as it did.
    timeout 20 "fuzz/target/release/$t" <"$input" 2>&1 | grep -v '^note:' | tail -8 || true
  done
done
exit "$failed"
