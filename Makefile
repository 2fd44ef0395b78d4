# The two commands of the README. Each sets up what is missing first (scripts/setup.sh).
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_AUTH_MODE := disabled

.PHONY: setup report test serve lint

setup:
	@bash scripts/setup.sh

# Main job: benchmark every family on every backend that works here, beside plain transformers
# and the reference libraries, within a 14-minute budget; writes reports/benchmark.md, .json and plots.
report: setup
	.venv/bin/ipfs-accelerate bench --suite seed --out reports/ --history-dir reports/history

test: setup
	.venv/bin/python -m pytest -q

# Serve the default models (real MiniLM embeddings, Whisper tiny.en) over OpenAI-compatible HTTP.
serve: setup
	.venv/bin/ipfs-accelerate serve

lint: setup
	.venv/bin/ruff check src tests
	.venv/bin/mypy
