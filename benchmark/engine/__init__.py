"""The one training loop and what it stands on.

``contract`` (Stage, StepContext, Trainable: imported by the engine, the generators and the segmenter), ``loop``
(``fit``), ``backends`` (torch | DeepSpeed, one engine per network), ``batches`` (seeding, the batch loader),
``checkpoint``, ``distributed`` (the only place torch.distributed is initialised), ``preemption`` (checkpoint at the
scheduler's signal) and ``device`` (the study's ``device`` key checked on the node).
"""
