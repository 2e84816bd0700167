"""propledger's benchmark suite: `python -m bench.run` (see bench/README.md).

Benchmarks, not tests: CI runs only `--quick` as a smoke check that they still execute.
"""
