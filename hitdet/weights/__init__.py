"""Weight files, below every command that reads or writes them (train, pretrain, search, eval, predict, export).

- :mod:`hitdet.weights.detector`: a detector's weights (``RUN/best.pt``, ``last.pt``, Lightning ``.ckpt``);
- :mod:`hitdet.weights.backbone`: a pretrained backbone (``hitdet pretrain``'s ``backbone.pt``), loaded into a
  fixed detector or a supernet.

No NNI or Lightning import here, so the commands that only read weights start fast.
"""
