"""Stand-in for scipy on a machine without it (benchmarks/gpu_check.sh), so that ``import nni`` works.

NNI 3.0 imports ``scipy.stats`` at import time for the continuous distributions of its
hyper-parameter spaces; the one-shot search never uses them. A real scipy earlier on the path wins.
"""
