"""Check the kinematic extractor (`mdvq.evaluation.physics`) where the simulator knows the truth.

On simulated walking (`data=radar` defaults, seed 0): for each walk,
- the cadence read from the spectrogram's cadence-velocity diagram against the true gait
  (stride) frequency `1 / Dc` of the Boulic model (`walking_cycle(height, speed)`) and the
  step rate `2 / Dc` (each leg swings once per cycle), with the diagram on dB and on linear
  power (`physics.cadence_scale`);
- the maximum of the upper envelope (and the minimum of the lower one) against the fastest
  scatterer's Doppler: the 12 segment-ellipsoid centres the simulator renders
  (`body_scatterers`), Doppler `-2/lambda dR/dt`, averaged over each STFT window (the
  spectrogram's time resolution), clipped to the displayed +-max_doppler_hz.
Both at the native resolution (129 x 120) and at the models' 64 x 64 (the datamodule's resize).

    python experiments/physics_metrics/check_extractor.py [--n 60] [--percentile 0.03]
        [--cadence-min-hz 1.0] [--noise-margin-db 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from mdvq.data.arrays import resample_axis
from mdvq.data.simulator import RadarSimulatorSource
from mdvq.data.simulator.kinematics import body_scatterers, walking_cycle
from mdvq.data.simulator.scenario import example_joints
from mdvq.data.spectrogram import resize_spectrogram, stft_magnitude
from mdvq.evaluation.physics import extract_features


def truth_doppler(source: RadarSimulatorSource, index: int, info: dict) -> tuple[float, float]:
    """(max, min) Doppler [Hz] over the window of the scatterers the simulator renders, each
    averaged over an STFT window, clipped to the displayed band."""
    cfg, stft = source.config, source.stft
    joints = example_joints(cfg, index)
    centres, _, _ = body_scatterers(joints, info["height_m"])  # (K, N, 3)
    radar = np.array([0.0, 0.0, cfg.radar_height_m])
    rng = np.linalg.norm(centres - radar, axis=-1)  # (K, N)
    doppler = -2.0 / cfg.wavelength * np.gradient(rng, 1.0 / cfg.prf_hz, axis=-1)
    win = np.ones(stft.nperseg) / stft.nperseg
    smooth = np.stack([np.convolve(d, win, mode="valid") for d in doppler])
    lim = stft.max_doppler_hz or cfg.prf_hz / 2
    return float(np.clip(smooth.max(), -lim, lim)), float(np.clip(smooth.min(), -lim, lim))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=60, help="walks to check")
    ap.add_argument("--percentile", type=float, default=0.03, help="envelope percentile p")
    ap.add_argument("--cadence-min-hz", type=float, default=1.0, help="physics.cadence_min_hz")
    ap.add_argument("--noise-margin-db", type=float, default=10.0,
                    help="physics.noise_margin_db (negative: none)")
    ap.add_argument("--size", type=int, nargs=2, default=[64, 64], help="resized (F, T)")
    args = ap.parse_args()
    source = RadarSimulatorSource(progress=False)  # data=radar defaults, seed 0
    cfg = source.config
    k = cfg.classes.index("walking")
    idx = [k + i * len(cfg.classes) for i in range(args.n)]
    t0 = time.time()
    imgs, gait, tmax, tmin = [], [], [], []
    for i in idx:
        img, info = source.spectrogram(i)
        imgs.append(img)
        gait.append(1.0 / walking_cycle(info["height_m"], info["speed_mps"])["cycle_s"])
        hi, lo = truth_doppler(source, i, info)
        tmax.append(hi)
        tmin.append(lo)
    imgs, gait, tmax, tmin = map(np.asarray, (imgs, gait, tmax, tmin))
    freqs, times, _ = stft_magnitude(np.zeros(cfg.num_samples, complex), cfg.prf_hz, source.stft)
    rows = []
    for name, x, f, t in [
        (f"native {imgs.shape[1]}x{imgs.shape[2]}", imgs, freqs, times),
        (f"resized {args.size[0]}x{args.size[1]}", resize_spectrogram(imgs, tuple(args.size)),
         resample_axis(freqs, args.size[0]), resample_axis(times, args.size[1])),
    ]:
        for scale in ("db", "linear"):
            feat = extract_features(x, f, t, source.stft.dynamic_range_db, args.percentile,
                                    cadence_min_hz=args.cadence_min_hz, cadence_scale=scale,
                                    noise_margin_db=None if args.noise_margin_db < 0
                                    else args.noise_margin_db)
            s = feat.summaries()
            bin_hz = float(f[1] - f[0])
            # the envelope on the side of the motion: approaching walks reach up, receding down
            side = np.where(tmax > -tmin, s["max_upper_hz"] - tmax, tmin - s["min_lower_hz"])
            rows.append((name, scale, bin_hz, s["cadence_hz"] / gait, side / bin_hz))
    print(f"{args.n} walks, envelope p = {args.percentile}, noise margin "
          f"{args.noise_margin_db} dB, {time.time() - t0:.0f} s")
    print(f"true gait frequency: {gait.min():.2f} - {gait.max():.2f} Hz (median "
          f"{np.median(gait):.2f}); fastest scatterer max {np.median(tmax):.0f} Hz median, "
          f"min {np.median(tmin):.0f} Hz median")
    print("| resolution | cadence on | bin [Hz] | cadence within 10 % of step rate 2/Dc | "
          "within 10 % of stride rate 1/Dc | cadence / (1/Dc) 10-50-90 % | envelope - fastest "
          "scatterer [bins] 10-50-90 % | within 3 bins |")
    print("|---|---|---:|---:|---:|---|---|---:|")
    for name, scale, bin_hz, ratio, side in rows:
        q = np.percentile(ratio, [10, 50, 90])
        e = np.percentile(side, [10, 50, 90])
        print(f"| {name} | {scale} | {bin_hz:.2f} | {np.mean(np.abs(ratio / 2 - 1) < 0.1):.2f} | "
              f"{np.mean(np.abs(ratio - 1) < 0.1):.2f} | {q[0]:.2f} / {q[1]:.2f} / {q[2]:.2f} | "
              f"{e[0]:+.1f} / {e[1]:+.1f} / {e[2]:+.1f} | {np.mean(np.abs(side) <= 3):.2f} |")


if __name__ == "__main__":
    main()
