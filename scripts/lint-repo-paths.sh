#!/usr/bin/env bash
# Fails when Rust code under shared/, functions/ or tests/ names a path outside the
# repository: a user's clone has nothing beside it (no ../shared), so a test that reads from
# there fails for everyone but the team. Each string literal with a `..` segment is resolved
# from the file's folder (include_bytes!, include_str!) and from its crate's folder
# (CARGO_MANIFEST_DIR); either way it must stay inside the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd -P)
problems=0

crate_of() {
  local dir=$1
  while [ "$dir" != "$repo" ] && [ ! -f "$dir/Cargo.toml" ]; do dir=$(dirname "$dir"); done
  printf '%s' "$dir"
}

inside() {
  case $(realpath -m "$1") in
    "$repo" | "$repo"/*) return 0 ;;
    *) return 1 ;;
  esac
}

while IFS= read -r file; do
  here=$(dirname "$repo/$file")
  crate=$(crate_of "$here")
  # "name:line:literal" for every string literal holding a `..` path segment.
  while IFS=: read -r line literal; do
    # A format placeholder standing first is a base folder: resolve the rest from the bases.
    path=$(sed -E 's/^"(\{[^}]*\}\/)?//; s/"$//' <<<"$literal")
    if ! inside "$here/$path" || ! inside "$crate/$path"; then
      echo "$file:$line: names a path outside the repository: $literal" >&2
      problems=$((problems + 1))
    fi
  done < <(grep -noE '"[^"]*(^|/|")\.\./[^"]*"' "$file" || true)
  # Named outright, whatever the quoting.
  if grep -nE '(\.\./)+shared/(images|hostile)|/work/shared' "$file" >&2; then
    echo "$file: names the team's shared folder, which a clone does not have" >&2
    problems=$((problems + 1))
  fi
done < <(git ls-files --cached --others --exclude-standard -- 'shared/*.rs' 'functions/*.rs' 'tests/*.rs')

if [ "$problems" -gt 0 ]; then
  echo "lint-repo-paths: $problems path(s) outside the repository" >&2
  exit 1
fi
echo "lint-repo-paths: every path Rust code names is inside the repository"
