#!/usr/bin/env bash
# Create the separate venv for infinity-emb, the embedding server the HTTP benchmark compares
# against. infinity-emb 0.0.78 pins numpy<2, sentence-transformers<4 and rich<14, so it cannot
# share the project's .venv. torch is held to the CPU build through constraints.txt (any other
# torch spec pulls a multi-GB CUDA build).
#
#   scripts/setup_infinity.sh [VENV_DIR]     (default: .venv-infinity)
#   ipfs-accelerate bench-http --infinity VENV_DIR/bin/infinity_emb
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${1:-.venv-infinity}"
PYTHON="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
CONSTRAINTS="$(mktemp)"
trap 'rm -f "$CONSTRAINTS"' EXIT
# Only the torch pin: infinity-emb brings its own transformers/numpy bounds.
grep -E '^torch==' constraints.txt > "$CONSTRAINTS"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install -c "$CONSTRAINTS" "torch==2.13.0" "infinity-emb[server,torch]==0.0.78"
"$VENV/bin/infinity_emb" --help > /dev/null
echo "infinity-emb ready: $VENV/bin/infinity_emb"
