"""The three recorded-data sources built the way Hydra builds them: from YAML naming their classes."""

from __future__ import annotations

import numpy as np
from hydra.utils import instantiate
from omegaconf import OmegaConf
from PIL import Image

from mdvq.data.glasgow import GlasgowSource

YAML = """
glasgow:
  _target_: mdvq.data.glasgow.GlasgowSource
  root: {root}/glasgow
  activity_names: {{1: walking, 2: sitting_down, 3: standing_up, 4: picking_up, 5: drinking,
                   6: falling}}
  range_bins: [1, 7]
  stft: {{nperseg: 32, noverlap: 24, nfft: 64}}   # window hamming and 40 dB stay from the default
  max_velocity_mps: 6.0
  image_size: [16, 8]
  cache_dir: {root}/cache
images:
  _target_: mdvq.data.images.ImageFolderSource
  root: {root}/pictures
  extensions: [.png]
  image_size: [16, 8]
arrays:
  _target_: mdvq.data.arrays.ArraySource
  path: {root}/set.npz
  scale: db
  dynamic_range_db: 40
  image_size: [16, 8]
"""


def test_sources_instantiate_from_yaml_and_agree_on_layout(tmp_path):
    rng = np.random.default_rng(0)
    # a Glasgow recording: 16 samples per sweep, 96 sweeps
    data = rng.normal(size=(96 * 16,)) + 1j * rng.normal(size=(96 * 16,))
    path = tmp_path / "glasgow" / "1 December 2017 Dataset" / "1P36A01R01.dat"
    path.parent.mkdir(parents=True)
    path.write_text("5.8e9\n1\n16\n4e8\n" + "".join(f"{z.real:.6g}{z.imag:+.6g}i\n" for z in data))
    (tmp_path / "pictures" / "walking").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (20, 30), dtype=np.uint8)).save(
        tmp_path / "pictures" / "walking" / "a.png")
    np.savez(tmp_path / "set.npz", images=-40 * rng.uniform(size=(2, 10, 12)), labels=[0, 1])

    cfg = OmegaConf.create(YAML.format(root=tmp_path))
    sources = {name: instantiate(cfg[name]) for name in ("glasgow", "images", "arrays")}
    assert isinstance(sources["glasgow"], GlasgowSource)
    stft = sources["glasgow"].stft
    got = (stft.window, stft.nperseg, stft.nfft, stft.dynamic_range_db)
    assert got == ("hamming", 32, 64, 40.0)
    for name, source in sources.items():
        got = source.load()
        assert got.images.shape[1:] == (1, 16, 8), name
        assert got.images.dtype == np.float32 and 0 <= got.images.min() <= got.images.max() <= 1
    glasgow = sources["glasgow"].load()
    assert list(glasgow.subjects) == ["1 December 2017 Dataset/P36"]
    # +-6 m/s at 5.8 GHz is +-232 Hz: 29 bins of 15.6 Hz, resampled to 16 rows inside that band
    assert -232.2 < glasgow.freqs_hz[0] < 0 < glasgow.freqs_hz[-1] < 232.2
    assert len(list((tmp_path / "cache").glob("glasgow-*.npz"))) == 1
