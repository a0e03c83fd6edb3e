"""The Hit-Detector search for the one-stage RetinaNet (paper Table 6): screen, search, retrain, evaluate.

Same pipeline, options and data handling as ``examples/coco_twostage.py`` (it calls that
file's ``run_pipeline``), with ``detector: retinanet`` in the screening and search configs:
the searched space is :class:`search_spaces.RetinaNetSpace` (backbone, PANet neck, and the
classification and box towers of the head, 2 x 4 searched blocks), and the exported
architecture JSON has ``detector.type: retinanet``, so retraining and evaluation build a
torchvision ``RetinaNet``. The paper reports 36.9 mAP with 33.05M parameters on COCO minival for
this variant; it gives no search time for it (the two-stage search took about 15 hours on
8 V100 GPUs). The RoI-related settings of the recipes (``box_*``, ``num_rois``) are unused here.

Run::

    python examples/retinanet_onestage.py --coco-root /data/coco --out runs/hitdet-retina \\
        --accelerator gpu --devices 8 --strategy ddp [--backbone-weights supernet.pt]
    python examples/retinanet_onestage.py --smoke --out /tmp/retina-smoke   # CPU, < 1 min

See ``python examples/retinanet_onestage.py --help`` for the explicit ``--train-images
--train-ann --val-images --val-ann`` form and the ``--screen-set/--search-set/--train-set``
overrides. Nothing is downloaded.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the sibling example, also when imported

from coco_twostage import main as pipeline_main  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    return pipeline_main(argv, detector="retinanet", description=(__doc__ or "").splitlines()[0])


if __name__ == "__main__":
    sys.exit(main())
