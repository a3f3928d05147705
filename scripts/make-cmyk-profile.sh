#!/usr/bin/env bash
# Regenerates functions/thumbnail-on-create/assets/cmyk-fogra39.icc from the free FOGRA39L
# characterisation data with ArgyllCMS (see the README beside the profile).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/e2e.sh
need_apt argyll icc-profiles-free
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp /usr/share/color/icc/FOGRA39L.ti3 "$work/"
(cd "$work" && colprof -qm -bl -D "FOGRA39 coated offset (bucketfn, from FOGRA39L.ti3)" \
  -C "Zlib; characterisation data by Fogra via Kai-Uwe Behrmann" FOGRA39L)
cp "$work/FOGRA39L.icc" functions/thumbnail-on-create/assets/cmyk-fogra39.icc
