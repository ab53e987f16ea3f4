"""The base every other package stands on: what a run folder holds and how a config becomes
objects. The run summary (`summary.py`), the samples folder (`samples.py`), config composition
and `build` (`compose.py`), the training precision a machine can run (`precision.py`) and the
error for bad input data (`errors.py`). It imports only `mdvq.utils` (package order:
`tests/test_package_order.py`)."""
