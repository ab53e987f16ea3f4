"""Physics checks of the embedded simulator and its class-mean spectrogram figure.

Usage (from the repository root):

    python experiments/simulator/check_physics.py --which after  [--num-per-class 60]
    python experiments/simulator/check_physics.py --which before [--commit 92518bb]

`after` uses the package `mdvq.data.simulator` (clutter removal as configured, default on);
`before` loads the single-file simulator `mdvq/data/simulate.py` as it was at `--commit`
(read with `git show`, no clutter removal: it had none). Both use the default settings
(`seed=0`, 6 human activities) and the first `--num-per-class` examples of each class.

Writes `experiments/simulator/class_means_<which>.png` (6 panels, time [s] x Doppler [Hz],
positive Doppler up) and prints a markdown table per class:

- lowest toe / foot (ankle or heel) / any joint height [m] (floor = 0);
- walking: horizontal speed [m/s] of the stance foot's contact point (its lowest point, the
  foot whose lowest point is the lower of the two), median and max over all stance samples;
  and the most negative foot Doppler [Hz] (ankle, heel, toe) of walks towards the radar;
- falls: the smallest horizontal / 3-D distance [m] of any joint to the radar and the largest
  joint |Doppler| [Hz] (`2 |dR/dt| / lambda`);
- clutter: with `P` the STFT power, noise = mean `P` over |f| > 200 Hz (no body motion there
  for the in-place classes), the "still extent" = the largest |f| [Hz] where the mean `P`
  over still frames (the body not moving: STFT windows wholly before the movement or after
  it ended) is more than 10 dB above the noise; and the motion level [dB] = the largest, over
  frames during the movement, mean `P` over 15 < |f| < 100 Hz relative to the noise.
  Medians over the examples of the class.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from mdvq.plotting import save_figure, spectrogram_grid

from mdvq.data.spectrogram import stft_magnitude

HERE = Path(__file__).resolve().parent
FEET = ("ankle", "heel", "toe")


def load_before(commit: str):
    """The single-file simulator module at `commit` (imported from a temporary copy)."""
    root = HERE.parents[1]
    text = subprocess.run(["git", "-C", str(root), "show", f"{commit}:mdvq/data/simulate.py"],
                          check=True, capture_output=True, text=True).stdout
    path = Path(tempfile.mkdtemp()) / "simulate_before.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location("simulate_before", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["simulate_before"] = mod
    spec.loader.exec_module(mod)
    return mod


def before_examples(commit: str, indices):
    """Yield (iq, info, world joints or None, source) from the old module; joints are
    captured by wrapping its `human_returns` (body origin at (range, 0), heading)."""
    mod = load_before(commit)
    src = mod.RadarSimulatorSource(progress=False)
    original = mod.human_returns
    captured = {}

    def capture(pose, height, range_m, aspect_deg, wavelength, radar_height_m=1.0):
        joints = mod.skeleton_joints(pose, height)
        heading = np.pi + np.radians(aspect_deg)
        captured["joints"] = {k: mod.to_world(v, (range_m, 0.0), heading)
                              for k, v in joints.items()}
        return original(pose, height, range_m, aspect_deg, wavelength, radar_height_m)

    mod.human_returns = capture
    for i in indices:
        captured.clear()
        iq, info = mod.simulate_example(src.config, i)
        yield iq, info, captured.get("joints"), src


def after_examples(indices):
    """Yield (clutter-removed iq, info, world joints or None, source) from the package."""
    from mdvq.data.simulator import RadarSimulatorSource, example_joints

    src = RadarSimulatorSource(progress=False)
    for i in indices:
        iq, info = src.slow_time(i)
        yield iq, info, example_joints(src.config, i), src


def radial_doppler(p: np.ndarray, radar: np.ndarray, prf: float, lam: float) -> np.ndarray:
    """Doppler [Hz] `-2 dR/dt / lambda` of a point track `(N, 3)` [m]."""
    r = np.linalg.norm(p - radar, axis=-1)
    return -2.0 * np.gradient(r) * prf / lam


def stance_contact_speed(j: dict, prf: float) -> np.ndarray:
    """Horizontal speed [m/s] of the stance foot's lowest point at every sample."""
    pts = []
    for side in ("l", "r"):
        names = [f"{n}_{side}" for n in FEET if f"{n}_{side}" in j]
        pts.append(np.stack([j[n] for n in names], 1))  # (N, P, 3)
    pts = np.concatenate(pts, 1)
    low = np.argmin(pts[..., 2], axis=1)
    vel = np.gradient(pts[..., :2], axis=0) * prf  # (N, P, 2)
    return np.linalg.norm(vel[np.arange(len(low)), low], axis=-1)


def activity_window(info: dict, cls: str) -> tuple[float, float] | None:
    """(start, end) [s] of the movement, or None for walking."""
    if cls == "walking" or "start_s" not in info:
        return None
    extra = 0.3 if cls == "falling" else 0.0  # the impact rebound
    return info["start_s"], info["start_s"] + info["activity_s"] + extra


def measure(examples, classes) -> tuple[dict, dict, np.ndarray, np.ndarray]:
    """Per-class metric lists and class-mean [0,1] images."""
    rows = {c: {} for c in classes}
    sums, counts = {}, {}
    freqs = times = None
    for iq, info, joints, src in examples:
        cls, cfg, stft = info["class"], src.config, src.stft
        radar = np.array([0.0, 0.0, cfg.radar_height_m])
        lam, prf = cfg.wavelength, cfg.prf_hz
        r = rows[cls]
        freqs, times, mag = stft_magnitude(iq, prf, stft)
        img = src_image(mag, stft)
        sums[cls] = sums.get(cls, 0) + img
        counts[cls] = counts.get(cls, 0) + 1
        p = mag**2
        noise = p[np.abs(freqs) > 200].mean()
        half = stft.nperseg / prf / 2
        win = activity_window(info, cls)
        if win is not None:
            still = (times + half < win[0]) | (times - half > win[1])
            moving = (times + half > win[0]) & (times - half < win[1])
            if still.any():
                level = 10 * np.log10(p[:, still].mean(1) / noise)
                loud = np.abs(freqs)[level > 10]
                r.setdefault("still_extent_hz", []).append(loud.max() if loud.size else 0.0)
            band = (np.abs(freqs) > 15) & (np.abs(freqs) < 100)
            if moving.any():
                r.setdefault("motion_db", []).append(
                    10 * np.log10(p[band][:, moving].mean(0).max() / noise))
        if joints is None:
            continue
        z = {k: v[:, 2].min() for k, v in joints.items()}
        r.setdefault("toe_min_z", []).append(min(z["toe_l"], z["toe_r"]))
        r.setdefault("foot_min_z", []).append(
            min(v for k, v in z.items() if k.split("_")[0] in ("ankle", "heel")))
        r.setdefault("any_min_z", []).append(min(z.values()))
        if cls == "walking":
            sp = stance_contact_speed(joints, prf)
            r.setdefault("contact_speed", []).append(sp)
            if abs(((info["aspect_deg"] + 180) % 360) - 180) < 90:  # towards the radar
                f = [radial_doppler(v, radar, prf, lam).min() for k, v in joints.items()
                     if k.split("_")[0] in FEET]
                r.setdefault("foot_min_doppler", []).append(min(f))
        if cls == "falling":
            d_h = min(np.linalg.norm(v[:, :2] - radar[:2], axis=1).min() for v in joints.values())
            d_3 = min(np.linalg.norm(v - radar, axis=1).min() for v in joints.values())
            f = max(np.abs(radial_doppler(v, radar, prf, lam)).max() for v in joints.values())
            r.setdefault("fall_min_range_h", []).append(d_h)
            r.setdefault("fall_min_range_3d", []).append(d_3)
            r.setdefault("fall_max_doppler", []).append(f)
    means = {c: sums[c] / counts[c] for c in sums}
    return rows, means, freqs, times


def src_image(mag: np.ndarray, stft) -> np.ndarray:
    """[0,1] image of a magnitude spectrogram (same normalisation as the data)."""
    from mdvq.data.spectrogram import magnitude_to_unit

    return magnitude_to_unit(mag, stft.dynamic_range_db)


def fmt(vals, how: str) -> str:
    if not vals:
        return "-"
    v = np.asarray(vals, dtype=float)
    if how == "min":
        return f"{v.min():+.3f}"
    if how == "med/min":
        return f"{np.median(v):.1f} / {v.min():.1f}"
    if how == "med/max":
        return f"{np.median(v):.1f} / {v.max():.1f}"
    if how == "min/med":
        return f"{v.min():.2f} / {np.median(v):.2f}"
    return f"{np.median(v):.1f}"


def table(rows: dict) -> str:
    out = [("| class | lowest toe z [m] | lowest ankle/heel z [m] | lowest joint z [m] "
           "| still extent [Hz] med / max | motion 15-100 Hz [dB] med / min |"),
           "|---|---:|---:|---:|---:|---:|"]
    for c, r in rows.items():
        out.append(f"| {c} | {fmt(r.get('toe_min_z'), 'min')} | {fmt(r.get('foot_min_z'), 'min')} "
                   f"| {fmt(r.get('any_min_z'), 'min')} | {fmt(r.get('still_extent_hz'), 'med/max')} "
                   f"| {fmt(r.get('motion_db'), 'med/min')} |")
    w = rows.get("walking", {})
    if w.get("contact_speed"):
        sp = np.concatenate(w["contact_speed"])
        out.append(f"\nwalking: stance-foot contact-point speed median {np.median(sp):.3f} m/s, "
                   f"95th pct {np.percentile(sp, 95):.3f} m/s, max {sp.max():.3f} m/s; "
                   f"most negative foot Doppler of walks towards the radar: median "
                   f"{np.median(w['foot_min_doppler']):.1f} Hz, min "
                   f"{np.min(w['foot_min_doppler']):.1f} Hz")
    f = rows.get("falling", {})
    if f.get("fall_min_range_h"):
        out.append(f"falling: closest joint to the radar horizontally min / median "
                   f"{fmt(f['fall_min_range_h'], 'min/med')} m, in 3-D "
                   f"{fmt(f['fall_min_range_3d'], 'min/med')} m; largest joint |Doppler| "
                   f"median {np.median(f['fall_max_doppler']):.0f} Hz, max "
                   f"{np.max(f['fall_max_doppler']):.0f} Hz")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--which", choices=["before", "after"], required=True)
    parser.add_argument("--commit", default="92518bb", help="commit of the 'before' simulator")
    parser.add_argument("--num-per-class", type=int, default=60)
    args = parser.parse_args()
    classes = ["walking", "sitting_down", "standing_up", "picking_up", "drinking", "falling"]
    indices = range(len(classes) * args.num_per_class)
    ex = (before_examples(args.commit, indices) if args.which == "before"
          else after_examples(indices))
    rows, means, freqs, times = measure(ex, classes)
    title = (f"class means, {args.num_per_class} per class, "
             + (f"before (simulate.py @ {args.commit})" if args.which == "before"
                else "after (mdvq.data.simulator, clutter removed)"))
    fig = spectrogram_grid([means[c] for c in classes], classes, freqs, times, suptitle=title)
    path = save_figure(fig, HERE / f"class_means_{args.which}.png")
    print(f"figure: {path}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
