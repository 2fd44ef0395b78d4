#!/usr/bin/env bash
# Idempotent set-up: Debian packages the tests need, a .venv, and the pinned pip packages.
# Quick when everything is already there (a stamp records what was installed).
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v espeak-ng >/dev/null 2>&1 || need_apt+=(espeak-ng)
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
# kubo's CIDs computed by an independent implementation (Go), for the store's compatibility test
command -v ipfs_cid >/dev/null 2>&1 || need_apt+=(ipfs-cid)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing Debian packages: ${need_apt[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
  else
    echo "setup: warning: missing ${need_apt[*]} (run as root or apt-get install them); tests that need them skip" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.ipfs-accelerate-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "setup: installing Python packages (torch pinned by constraints.txt; a few minutes the first time)"
  .venv/bin/pip install -q --disable-pip-version-check -c constraints.txt -e ".[dev]" 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  .venv/bin/python -c "import ipfs_accelerate, torch, transformers" 
  echo "$want" > "$stamp"
fi
