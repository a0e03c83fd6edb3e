"""What torchmetrics touches at import when it finds scipy: ``scipy.signal.hamming``."""


def hamming(*args: object, **kwargs: object) -> object:
    raise ImportError("scipy.signal.hamming: scipy is not installed (stub of benchmarks/gpu_check.sh)")
