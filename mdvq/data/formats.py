"""Readers for recorded data: raw Glasgow FMCW files, raw I/Q recordings, picture folders and
numpy arrays.

Each source is a plain-argument class with `load() -> SpectrogramSet` (images float32
`(N, C, F, T)` in [0,1], rows in ascending Doppler), so Hydra can instantiate it from
`conf/data/*.yaml` as `data.source`. The implementations live in `glasgow.py`, `iq.py`,
`images.py` and `arrays.py`; this module gathers them under one name.
"""

from mdvq.data.arrays import ArraySource, db_to_unit, resample_axis, stack_examples
from mdvq.data.clutter import mti_filter, remove_static_clutter
from mdvq.data.glasgow import (
    GLASGOW_ACTIVITIES,
    GLASGOW_STFT,
    GlasgowName,
    GlasgowRecording,
    GlasgowSource,
    glasgow_spectrogram,
    parse_complex_tokens,
    parse_glasgow_name,
    range_profiles,
    read_glasgow_dat,
)
from mdvq.data.images import ColormapInverter, ImageFolderSource, colormap_table
from mdvq.data.iq import IQRecording, IQSource, as_complex, iq_spectrograms, read_iq

__all__ = [
    "GLASGOW_ACTIVITIES",
    "GLASGOW_STFT",
    "ArraySource",
    "ColormapInverter",
    "GlasgowName",
    "GlasgowRecording",
    "GlasgowSource",
    "IQRecording",
    "IQSource",
    "ImageFolderSource",
    "as_complex",
    "colormap_table",
    "db_to_unit",
    "glasgow_spectrogram",
    "iq_spectrograms",
    "mti_filter",
    "parse_complex_tokens",
    "parse_glasgow_name",
    "range_profiles",
    "read_glasgow_dat",
    "read_iq",
    "remove_static_clutter",
    "resample_axis",
    "stack_examples",
]
