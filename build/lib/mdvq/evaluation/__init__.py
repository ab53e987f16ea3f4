"""Evaluation library: reconstruction and codebook metrics, the phase-1 decision rule, and the
phase-2 generation metrics against an in-domain classifier (docs/metrics.md).

- :mod:`mdvq.evaluation.metrics`: PSNR, codebook usage, perplexity, dead codes.
- :mod:`mdvq.evaluation.decision`: the phase-1 rule, applied to numbers or to two runs.
- :mod:`mdvq.evaluation.classifier_run`: reload a classifier with its data and split.
- :mod:`mdvq.evaluation.accuracy`: predictions, conditional accuracy.
- :mod:`mdvq.evaluation.frechet`: torchmetrics' FID with the classifier as feature extractor.
- :mod:`mdvq.evaluation.tstr`: train on synthetic, test on real.
- :mod:`mdvq.evaluation.generation`: all of the above on one samples folder, written out
  (the command is ``python -m mdvq.evaluate``).
"""
