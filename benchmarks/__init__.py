"""Benchmarks for codex-ci: ``python -m benchmarks.run [NAME ...]`` from the repository root (see scripts/bench and
BENCHMARKS.md). They use the test harness (the loopback token endpoint, the store servers) from ``testing``.
"""
