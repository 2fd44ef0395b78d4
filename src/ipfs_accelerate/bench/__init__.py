"""Benchmarks: ``ipfs-accelerate bench`` and the pieces it is built from.

* :mod:`.scenario`: what to measure (cases, suites, YAML/TOML scenario files);
* :mod:`.runner`: runs it, in order and within the budget (load, measure, baselines);
* :mod:`.measure`: the meters (peak RSS, CUDA memory, timed calls, share of the peaks);
* :mod:`.budget`: the time budget's clock and what one measurement may take;
* :mod:`.concurrency`: many callers at once through the dynamic batcher;
* :mod:`.results`: what a run measured, its JSON and the JSON schema derived from it;
* :mod:`.baselines`: plain transformers fp32 by task kind, and the families' references
  (each task's :class:`~ipfs_accelerate.families.bench_profile.BenchProfile`);
* :mod:`.stats`, :mod:`.machine`: latency summaries, measured machine peaks;
* :mod:`.target_needs`, :mod:`.targets`, :mod:`.report`: what the targets read, the targets
  table, Markdown, JSON and PNG plots;
* :mod:`.progress`, :mod:`.cli`: the progress bar and the ``bench`` sub-command;
* :mod:`.quality`: word error rate for speech recognition, agreement with a baseline.

Nothing is imported here, so importing one module stays cheap.
"""
