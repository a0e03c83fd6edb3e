"""The one place that knows which of NNI's import-time warnings are noise, and silences them.

NNI 3.0, imported under this torch version, warns that ``Buffer`` and
``LinearCrossEntropyOptions`` are "found to be not a nn.Module": harmless (NNI skips them) and
nothing a user can act on. Every module that imports NNI (or Lightning through NNI) does so
inside :func:`quiet_nni_import`; the CLI and the run lifecycle filter the same pattern globally.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

NNI_IMPORT_WARNINGS = ".*(Buffer|LinearCrossEntropyOptions).*"  # the message pattern of those warnings


def ignore_nni_import_warnings() -> None:
    """Filter NNI's import-time warnings for the rest of the process (the CLI's entry point)."""
    warnings.filterwarnings("ignore", message=NNI_IMPORT_WARNINGS, category=RuntimeWarning)


@contextlib.contextmanager
def quiet_nni_import() -> Iterator[None]:
    """Within the block, NNI's import-time warnings are silenced (and only those)."""
    with warnings.catch_warnings():
        ignore_nni_import_warnings()
        yield
