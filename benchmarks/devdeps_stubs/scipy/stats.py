"""The four distributions ``nni.mutable`` imports; using one raises (the search never does)."""


class _Missing:
    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, *args: object, **kwargs: object) -> object:
        raise ImportError(f"scipy.stats.{self.name}: scipy is not installed (stub of benchmarks/gpu_check.sh)")

    def __getattr__(self, attr: str) -> object:
        raise ImportError(f"scipy.stats.{self.name}.{attr}: scipy is not installed (stub of benchmarks/gpu_check.sh)")


norm, lognorm, uniform, loguniform = (_Missing(n) for n in ("norm", "lognorm", "uniform", "loguniform"))
