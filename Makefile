# The two commands of the README. Each sets up what is missing first (scripts/setup.sh).
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export RAY_AUTH_MODE := disabled

.PHONY: setup report test lint

setup:
	@bash scripts/setup.sh

# Main job: run every family on this machine and print the table.
report: setup
	.venv/bin/ipfs-accelerate demo

test: setup
	.venv/bin/python -m pytest -q

lint: setup
	.venv/bin/ruff check src tests
	.venv/bin/mypy
