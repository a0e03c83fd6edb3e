"""The evidence harness (``python -m benchmarks.evidence``): see :mod:`benchmarks.evidence.harness`."""
