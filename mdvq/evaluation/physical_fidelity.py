"""Physical fidelity of generated spectrograms against real ones, per class, without a judge.

On the kinematic features of `mdvq.evaluation.physics` (envelopes, centroid, bandwidth,
cadence; Hz), for each class (docs/physical-fidelity.md):

- Wasserstein ratios: the 1-D Wasserstein distance (`scipy.stats.wasserstein_distance`, Hz)
  between the samples' and the real test split's distribution of each scalar summary
  (`physics.SUMMARY_KEYS`), divided by the floor: the same distance between a real train
  subset of as many examples as there are samples (so both carry the same finite-sample
  bias; averaged over `floor_repeats` seeded subsets) and real test. About 1: as close to
  real test as real train is; >> 1: physically off.
- Envelope DTW: the mean absolute difference [Hz] along the dynamic-time-warping path between
  each sample's upper envelope and its nearest real train upper envelope, beside the same for
  real test examples (the floor).
- Kinematic sifting (after Erol, Gurbuz & Amin, IEEE TAES 2020): PCA on the real train
  envelope features (upper and lower envelope, `(2T,)` Hz), the Mahalanobis distance in the
  kept components and the residual off them (`Sifter`), the threshold at the `sift_quantile` (0.95) quantile of real test; the
  pass rate is the share of samples within it (real test: 0.95 by construction).

The settings have one source, `conf/physics/default.yaml` (`physics_settings`).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
from scipy.stats import wasserstein_distance

from mdvq.evaluation.physics import SUMMARY_KEYS, PhysicsFeatures, extract_features

log = logging.getLogger(__name__)

ROUTE_KEYS = ("physics_median_ratio", "physics_pass_rate")
"""The keys of `route_summary` (a "physical fidelity" column of the routes table)."""


def physics_settings(**overrides) -> dict:
    """The settings of `conf/physics/default.yaml` (the one source), with `overrides` (keys of
    that file; an unknown key is a ValueError naming it and the file)."""
    from omegaconf import OmegaConf

    from mdvq.core.compose import config_dir

    path = config_dir() / "physics" / "default.yaml"
    settings = OmegaConf.to_container(OmegaConf.load(path))
    unknown = sorted(set(overrides) - set(settings))
    if unknown:
        raise ValueError(f"physics: unknown key(s) {unknown}; the keys of {path} are "
                         f"{sorted(settings)}")
    settings.update(overrides)
    for key in ("floor_repeats", "sift_components", "dtw_references", "dtw_samples"):
        if int(settings[key]) < 1:
            raise ValueError(f"physics.{key} must be >= 1, got {settings[key]}")
    if not 0.0 < float(settings["sift_quantile"]) < 1.0:
        raise ValueError(f"physics.sift_quantile must lie in (0, 1), got {settings['sift_quantile']}")
    return settings


def dynamic_range_of(datamodule, configured: float | None = None) -> float:
    """D [dB] of the datamodule's [0,1] images: `configured` when given, else the source's
    `stft.dynamic_range_db` or `dynamic_range_db`; a ValueError naming `physics.dynamic_range_db`
    when neither is known (e.g. image folders)."""
    if configured is not None:
        return float(configured)
    source = getattr(datamodule, "source", None)
    for owner in (getattr(source, "stft", None), source):
        value = getattr(owner, "dynamic_range_db", None)
        if value is not None:
            return float(value)
    raise ValueError("physics: the data source does not say the dynamic range of its dB images; "
                     "give physics.dynamic_range_db=<D in dB> (docs/data.md)")


def wasserstein_ratios(samples: dict, train: dict, test: dict, repeats: int = 5,
                       rng: np.random.Generator | None = None) -> dict:
    """Per summary key of `samples` (dicts of `(N,)` arrays, Hz): `{"distance": W(samples,
    test), "floor": mean W(train subset, test), "floor_std", "ratio": distance / floor}` [Hz,
    Hz, -]. The train subsets hold as many examples as `samples` (all of train when it has no
    more), `repeats` seeded draws; `ratio` is None when the floor is 0."""
    rng = np.random.default_rng(0) if rng is None else rng
    out = {}
    for key, values in samples.items():
        tr, te = np.asarray(train[key]), np.asarray(test[key])
        n = min(len(values), len(tr))
        floors = [wasserstein_distance(tr if n == len(tr) else
                                       tr[rng.choice(len(tr), size=n, replace=False)], te)
                  for _ in range(1 if n == len(tr) else int(repeats))]
        dist, floor = float(wasserstein_distance(values, te)), float(np.mean(floors))
        out[key] = {"distance": dist, "floor": floor, "floor_std": float(np.std(floors)),
                    "ratio": dist / floor if floor > 0 else None}
    return out


def dtw_nearest(curves: np.ndarray, references: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """For each curve `(N, T)`, the smallest DTW cost to any of `references` `(M, T)`, as the
    mean absolute difference along the warping path (the classic recursion with steps
    (1,0), (0,1), (1,1), total cost divided by `2T`, the length of the diagonal path counted
    on both curves), in the curves' units (Hz). Returns `(N,)`."""
    a, b = np.asarray(curves, dtype=np.float64), np.asarray(references, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(f"dtw_nearest needs (N, T) and (M, T) curves, got {a.shape}, {b.shape}")
    n, m, t = len(a), len(b), a.shape[1]
    if n == 0 or m == 0:
        return np.full(n, np.nan)
    ia, ib = np.divmod(np.arange(n * m), m)  # all pairs, in chunks
    best = np.full(n, np.inf)
    for s in range(0, n * m, chunk):
        pa, pb = a[ia[s:s + chunk]], b[ib[s:s + chunk]]  # (P, T)
        prev = None
        for i in range(t):
            cost = np.abs(pa[:, i:i + 1] - pb)  # (P, T): |a_i - b_j|
            if prev is None:  # first row: a diagonal start weighs 2 (symmetric DTW), then (0,1)
                base = 2 * cost
                base[:, 1:] = np.inf
            else:  # from below (1,0) or the diagonal (1,1)
                base = prev + cost
                base[:, 1:] = np.minimum(base[:, 1:], prev[:, :-1] + 2 * cost[:, 1:])
            # the horizontal steps (0,1): row[j] = min_k<=j base[k] + sum_{k<m<=j} cost[m],
            # a running minimum on cumulative sums instead of a loop over j
            csum = np.cumsum(cost, axis=1)
            prev = csum + np.minimum.accumulate(base - csum, axis=1)
        np.minimum.at(best, ia[s:s + chunk], prev[:, -1] / (2 * t))
    return best


class Sifter:
    """Kinematic sifting: PCA of real envelope features, Mahalanobis distance, a threshold.

    `fit(train (N, D), test (M, D))`: centre on the train mean and keep the first `components`
    principal axes (at most N-1 and D) with their train variances. A feature vector has two
    distances from the real cloud: Hotelling's `T^2 = sum_k score_k^2 / var_k` (Mahalanobis
    in the kept axes) and the squared residual off them (`SPE`, so a departure the kept axes
    do not span, e.g. a constant Doppler shift of both envelopes, still counts). Each is
    divided by its median over real train; `distance(x (K, D))` is the square root of the
    larger (dimensionless; about 1 for a typical real example). The threshold is the
    `quantile` quantile of the test distances (the next real value up, so at least that
    share of real test passes); `passes(x)` is `distance <= threshold`.
    """

    def __init__(self, components: int = 10, quantile: float = 0.95):
        self.components, self.quantile = int(components), float(quantile)
        self.mean = self.axes = self.var = None
        self.scale = (1.0, 1.0)  # train medians of T^2 and SPE
        self.threshold = float("nan")

    def fit(self, train: np.ndarray, test: np.ndarray) -> Sifter:
        """Fit the PCA on `train` and set the threshold from `test`; returns self."""
        train = np.asarray(train, dtype=np.float64)
        if len(train) < 3:
            raise ValueError(f"sifting needs at least 3 real train examples, got {len(train)}")
        self.mean = train.mean(axis=0)
        _, sing, vt = np.linalg.svd(train - self.mean, full_matrices=False)
        eig = sing**2 / (len(train) - 1)
        k = max(1, min(self.components, len(train) - 1, train.shape[1]))
        self.axes = vt[:k]
        self.var = np.maximum(eig[:k], 1e-12 * max(float(eig.max()), 1e-300))
        t2, spe = self._parts(train)
        # no residual part when the kept axes span the features (it would be rounding noise)
        rest = k < min(train.shape[1], len(train) - 1)
        self.scale = (max(float(np.median(t2)), 1e-300),
                      max(float(np.median(spe)), 1e-300) if rest else None)
        self.threshold = float(np.quantile(self.distance(test), self.quantile, method="higher"))
        return self

    def _parts(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        centred = np.asarray(x, dtype=np.float64) - self.mean
        scores = centred @ self.axes.T
        residual = centred - scores @ self.axes
        return (scores**2 / self.var).sum(axis=1), (residual**2).sum(axis=1)

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Distance `(K,)` of features `x` `(K, D)` from the real cloud (see the class)."""
        t2, spe = self._parts(x)
        if self.scale[1] is None:
            return np.sqrt(t2 / self.scale[0])
        return np.sqrt(np.maximum(t2 / self.scale[0], spe / self.scale[1]))

    def passes(self, x: np.ndarray) -> np.ndarray:
        """Boolean `(K,)`: the distance is within the threshold."""
        return self.distance(x) <= self.threshold


def _subset(n: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    return np.arange(n) if n <= limit else np.sort(rng.choice(n, size=limit, replace=False))


def class_fidelity(samples: PhysicsFeatures, train: PhysicsFeatures, test: PhysicsFeatures,
                   settings: dict, rng: np.random.Generator) -> dict:
    """The physical fidelity of one class's samples against its real train and test features:
    `wasserstein` (per summary key, `wasserstein_ratios`), `median_ratio`, `dtw` (samples and
    real test, mean over examples of the nearest real train envelope's DTW [Hz], and their
    ratio), `pass_rate` / `real_test_pass_rate` (sifting) and `counts`."""
    result: dict = {"counts": {"samples": len(samples), "real_train": len(train),
                               "real_test": len(test)}}
    if len(samples) == 0 or len(train) < 3 or len(test) < 2:
        result["skipped"] = "too few examples (need samples, >= 3 real train, >= 2 real test)"
        return result
    w = wasserstein_ratios(samples.summaries(), train.summaries(), test.summaries(),
                           int(settings["floor_repeats"]), rng)
    ratios = [v["ratio"] for v in w.values() if v["ratio"] is not None]
    refs = train.upper[_subset(len(train), int(settings["dtw_references"]), rng)]
    limit = int(settings["dtw_samples"])
    dtw_s = float(np.mean(dtw_nearest(samples.upper[_subset(len(samples), limit, rng)], refs)))
    dtw_t = float(np.mean(dtw_nearest(test.upper[_subset(len(test), limit, rng)], refs)))
    sifter = Sifter(int(settings["sift_components"]), float(settings["sift_quantile"]))
    sifter.fit(train.envelope_vectors(), test.envelope_vectors())
    result.update({
        "wasserstein": w,
        "median_ratio": float(np.median(ratios)) if ratios else None,
        "dtw": {"samples_hz": dtw_s, "real_test_hz": dtw_t,
                "ratio": dtw_s / dtw_t if dtw_t > 0 else None},
        "pass_rate": float(np.mean(sifter.passes(samples.envelope_vectors()))),
        "real_test_pass_rate": float(np.mean(sifter.passes(test.envelope_vectors()))),
        "sift_threshold": sifter.threshold,
        "sift_components": len(sifter.var),
    })
    return result


def physical_fidelity(samples: tuple[np.ndarray, np.ndarray], train: tuple[np.ndarray, np.ndarray],
                      test: tuple[np.ndarray, np.ndarray], class_names: list[str],
                      freqs_hz: np.ndarray, times_s: np.ndarray, dynamic_range_db: float,
                      settings: dict | None = None, seed: int = 0,
                      out_dir: str | Path | None = None) -> dict:
    """Physical fidelity of generated spectrograms, per class and overall.

    `samples`, `train`, `test`: `(images (N, 1, F, T) in [0,1], labels (N,))` (for samples,
    the class asked for); axes `freqs_hz` (F,) [Hz] ascending and `times_s` (T,) [s];
    `dynamic_range_db` [dB] of the images; `settings` from `physics_settings` (None: the
    defaults); `seed` fixes the floor subsets and DTW subsets. With `out_dir` and
    `settings["figures"]`, writes `out_dir/physics/<class>.png` (`plot_envelope_bands`).
    Returns `{"per_class": {name: class_fidelity}, "median_ratio" (median over classes and
    summary keys), "pass_rate" (share of all samples passing their class's sifting),
    "real_test_pass_rate", "dtw_ratio" (median over classes), "settings", "figures"}`.
    """
    settings = physics_settings() if settings is None else settings
    rng = np.random.default_rng(seed)

    def features(images):
        return extract_features(images, freqs_hz, times_s, dynamic_range_db,
                                float(settings["percentile"]), float(settings["cadence_min_hz"]),
                                settings["cadence_max_hz"], str(settings["cadence_scale"]),
                                settings["noise_margin_db"])

    feats = {name: (features(x), np.asarray(y)) for name, (x, y) in
             (("samples", samples), ("train", train), ("test", test))}
    per_class, figures, ratios, passed, test_passed, dtw = {}, [], [], [], [], []
    for c, name in enumerate(class_names):
        part = {k: f.subset(y == c) for k, (f, y) in feats.items()}
        res = class_fidelity(part["samples"], part["train"], part["test"], settings, rng)
        per_class[name] = res
        if "skipped" in res:
            continue
        ratios += [v["ratio"] for v in res["wasserstein"].values() if v["ratio"] is not None]
        passed.append((res["pass_rate"], len(part["samples"])))
        test_passed.append((res["real_test_pass_rate"], len(part["test"])))
        if res["dtw"]["ratio"] is not None:
            dtw.append(res["dtw"]["ratio"])
        if out_dir is not None and settings.get("figures", True):
            path = Path(out_dir) / "physics" / f"{_safe(name)}.png"
            plot_envelope_bands(part["test"], part["samples"], times_s, name, path)
            figures.append(path.relative_to(out_dir).as_posix())

    def weighted(pairs):
        total = sum(n for _, n in pairs)
        return float(sum(r * n for r, n in pairs) / total) if total else None

    return {"per_class": per_class,
            "median_ratio": float(np.median(ratios)) if ratios else None,
            "pass_rate": weighted(passed), "real_test_pass_rate": weighted(test_passed),
            "dtw_ratio": float(np.median(dtw)) if dtw else None,
            "summary_keys": list(SUMMARY_KEYS), "settings": dict(settings),
            "dynamic_range_db": float(dynamic_range_db), "figures": figures}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(name)).strip("-") or "class"


def plot_envelope_bands(real: PhysicsFeatures, samples: PhysicsFeatures, times_s: np.ndarray,
                        title: str, path: str | Path) -> Path:
    """Write a figure of the upper and lower envelopes [Hz] against time [s]: the real band
    (median line, 10-90 % shaded) with the samples' band drawn over it. Returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for feats, colour, label in ((real, "tab:blue", f"real test ({len(real)})"),
                                 (samples, "tab:orange", f"samples ({len(samples)})")):
        for k, curves in enumerate((feats.upper, feats.lower)):
            if len(curves) == 0:
                continue
            lo, med, hi = np.percentile(curves, [10, 50, 90], axis=0)
            ax.fill_between(times_s, lo, hi, color=colour, alpha=0.25, linewidth=0)
            ax.plot(times_s, med, color=colour, label=label if k == 0 else None)
    ax.set_xlabel("time [s]")
    ax.set_ylabel("Doppler [Hz]")
    ax.set_title(f"{title}: upper / lower envelope, median and 10-90 %")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def route_summary(result: dict) -> dict:
    """The "physical fidelity" figures of one route from its generation metrics (the dict
    `evaluate_generation` returns or `read_metrics` reads): `physics_median_ratio` (median
    Wasserstein ratio to the real floor over classes and summaries; ~1 good, >> 1 off) and
    `physics_pass_rate` (share of samples passing kinematic sifting; real test: 0.95). None
    where the metrics hold none (written before, or physics disabled)."""
    metrics = result.get("metrics", result) if isinstance(result, dict) else {}
    return {key: metrics.get(key) for key in ROUTE_KEYS}


def format_route_cell(summary: dict) -> str:
    """The routes-table cell of `route_summary`: "ratio 1.3, pass 0.82" (or "n/a")."""
    ratio, rate = (summary.get(k) for k in ROUTE_KEYS)
    if ratio is None and rate is None:
        return "n/a"
    parts = []
    if ratio is not None:
        parts.append(f"ratio {ratio:.3g}")
    if rate is not None:
        parts.append(f"pass {rate:.2f}")
    return ", ".join(parts)


def format_markdown(phys: dict) -> str:
    """A markdown section (title, overall line, per-class table) of `physical_fidelity`'s
    result."""
    from mdvq.utils.tables import markdown_table

    def f(v, digits=3):
        return "n/a" if v is None else f"{v:.{digits}g}"

    lines = ["## Physical fidelity", ""]
    if phys.get("skipped"):
        return "\n".join([*lines, f"Skipped: {phys['skipped']}", ""])
    s = phys["settings"]
    lines.append(
        f"Median Wasserstein ratio to the real floor {f(phys['median_ratio'])} (~1: as close to "
        f"real test as real train is; >> 1: physically off); sifting pass rate "
        f"{f(phys['pass_rate'])} (real test {f(phys['real_test_pass_rate'])}); envelope DTW "
        f"ratio {f(phys['dtw_ratio'])}. Envelope percentile {s['percentile']}, dynamic range "
        f"{phys['dynamic_range_db']:g} dB, cadence on {s['cadence_scale']} from "
        f"{s['cadence_min_hz']} Hz.")
    header = ["class", *(f"W ratio {k}" for k in SUMMARY_KEYS), "median ratio",
              "DTW samples / real test [Hz]", "sifting pass (samples / real test)"]
    rows = []
    for name, r in phys["per_class"].items():
        if "skipped" in r:
            rows.append([name, *(["n/a"] * (len(header) - 2)), r["skipped"]])
            continue
        rows.append([name, *(f(r["wasserstein"][k]["ratio"]) for k in SUMMARY_KEYS),
                     f(r["median_ratio"]),
                     f"{f(r['dtw']['samples_hz'])} / {f(r['dtw']['real_test_hz'])}",
                     f"{f(r['pass_rate'], 2)} / {f(r['real_test_pass_rate'], 2)}"])
    lines += ["", markdown_table(header, rows), ""]
    if phys.get("figures"):
        lines.append("Envelope bands: " + ", ".join(f"`{p}`" for p in phys["figures"]))
        lines.append("")
    return "\n".join(lines)
