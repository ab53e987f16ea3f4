"""Orchestration: training one configured model (`training.py`), multi-stage experiments
(`experiments.py`), sweep tables (`sweeps.py`), the HTML report (`report.py`) and sampling a
trained prior (`prior_sampling.py`). The run-folder formats they write live in `mdvq.core`."""
