"""Run folders and what is built from configs: the run summary (`summary.py`), the samples
folder (`samples.py`), training one configured model (`training.py`), composing the configs
(`compose.py`), multi-stage experiments (`experiments.py`) and sweep tables (`sweeps.py`)."""
