"""Test-wide set-up: NNI never writes to the real home, and nothing downloads."""

from __future__ import annotations

import os
import tempfile
import warnings

# NNI writes ~/nni-experiments (and its .experiment manifest) on experiment start; point HOME
# at a throw-away folder before anything imports NNI.
_HOME = tempfile.mkdtemp(prefix="hitdet-test-home-")
os.environ["HOME"] = _HOME
os.environ.setdefault("NNI_EXPERIMENT_DIR", os.path.join(_HOME, "nni-experiments"))
os.environ.setdefault("TORCH_HOME", os.path.join(_HOME, "torch"))
warnings.filterwarnings("ignore", message=".*(Buffer|LinearCrossEntropyOptions).*", category=RuntimeWarning)
