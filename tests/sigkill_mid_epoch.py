"""``python -m hitdet ARGS``, killed by SIGKILL right after the first training step of epoch ``KILL_EPOCH``.

Used by tests/test_resume.py: the kill lands at a known point in the middle of an epoch (the
step's weights and α are changed in memory, the epoch's checkpoint is not written), with no
chance for Python to clean up, as a pre-empted GPU job would die.

usage: KILL_EPOCH=1 sigkill_mid_epoch.py COMMAND ARGS...
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any


def main() -> None:
    from pytorch_lightning.callbacks import ModelCheckpoint  # every training-like command uses one

    epoch = int(os.environ["KILL_EPOCH"])
    original = ModelCheckpoint.on_train_batch_end

    def on_train_batch_end(self: ModelCheckpoint, trainer: Any, *args: Any, **kwargs: Any) -> None:
        original(self, trainer, *args, **kwargs)
        if trainer.current_epoch == epoch:
            os.kill(os.getpid(), signal.SIGKILL)

    ModelCheckpoint.on_train_batch_end = on_train_batch_end  # type: ignore[method-assign]
    from hitdet.cli import main as hitdet

    sys.exit(hitdet(sys.argv[1:]))


if __name__ == "__main__":
    main()
