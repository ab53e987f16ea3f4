"""Phase-2 generation metrics (DESIGN.md section 4) against an in-domain classifier.

``python -m mdvq.evaluate classifier=CLS_RUN samples=SAMPLES_DIR out=DIR`` writes
``metrics.json`` and ``metrics.md``: conditional accuracy of the samples, Frechet distance on
the classifier's penultimate features (with the real train/test floor), and TSTR beside TRTR.

- :mod:`mdvq.evaluate.samples`: read and check a samples directory (the sampler's output).
- :mod:`mdvq.evaluate.classifier_run`: reload a classifier with its data and split.
- :mod:`mdvq.evaluate.accuracy`: predictions, conditional accuracy.
- :mod:`mdvq.evaluate.frechet`: torchmetrics' FID with the classifier as feature extractor.
- :mod:`mdvq.evaluate.tstr`: train on synthetic, test on real.
- :mod:`mdvq.evaluate.report`: all of the above on one samples directory, written out.
"""

from mdvq.evaluate.accuracy import conditional_accuracy, predict
from mdvq.evaluate.classifier_run import ClassifierRun, load_classifier_run
from mdvq.evaluate.frechet import ClassifierFeatures, frechet_distance
from mdvq.evaluate.report import evaluate_generation, write_metrics
from mdvq.evaluate.samples import SampleSet, check_compatible, load_samples, write_samples
from mdvq.evaluate.tstr import train_on_synthetic

__all__ = [
    "ClassifierFeatures", "ClassifierRun", "SampleSet", "check_compatible", "conditional_accuracy",
    "evaluate_generation", "frechet_distance", "load_classifier_run", "load_samples", "predict",
    "train_on_synthetic", "write_metrics", "write_samples",
]
