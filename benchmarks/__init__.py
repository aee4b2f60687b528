"""The benchmark suite: `backchannel bench` (see benchmarks/run.py)."""
