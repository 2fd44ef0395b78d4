"""Benchmarks: ``ipfs-accelerate bench`` and the pieces it is built from.

* :mod:`.scenario`: what to measure (cases, suites, YAML/TOML scenario files);
* :mod:`.runner`: measures it (load, cold call, warm-up, timed runs, memory, baselines);
* :mod:`.baselines`: plain transformers fp32 by task kind, and the families' references;
* :mod:`.stats`, :mod:`.machine`: latency summaries, measured machine peaks;
* :mod:`.targets`, :mod:`.report`: the targets table, Markdown, JSON and PNG plots;
* :mod:`.progress`, :mod:`.cli`: the progress bar and the ``bench`` sub-command;
* :mod:`.quality`: word error rate for speech recognition.

Nothing is imported here, so importing one module stays cheap.
"""
