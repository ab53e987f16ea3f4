"""The phase-1 decision rule (docs/metrics.md): continue with the VQ-VAE or choose the KL-VAE.

Continue the VQ-VAE route only if `PSNR_vq > (1 + psnr_margin) * PSNR_kl` and
`usage_vq > usage_threshold`, both on the same held-out split; otherwise (also when the two are
comparable) choose the KL-VAE. Comparisons are strict: a value equal to its threshold (to 1e-9
relative) does not pass. The thresholds have one source, `conf/decision/default.yaml` (10 %,
0.80), read by `thresholds()`: phase 1, the `DecisionRule` callback and `python -m mdvq.decide`
all use it. Plain Python, no torch, so the command starts fast.

A usage figure is only comparable with the threshold when enough codes were selected: with N
selections of K codes even a perfectly uniform codebook shows usage `1 - (1 - 1/K)^N` at most
in expectation (and never more than `min(1, N / K)`). When that is not above the threshold the
decision says so (`usage_comparable: false`) instead of silently deciding on the figure.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from pathlib import Path

from mdvq.core.summary import RunSummary
from mdvq.utils.metric_keys import TEST_CODEBOOK_USAGE, TEST_PSNR

log = logging.getLogger(__name__)

DECISION_NAME = "decision.json"
PSNR_KEY = TEST_PSNR
USAGE_KEY = TEST_CODEBOOK_USAGE
SELECTIONS_KEY = "test/codebook_selections"


def thresholds() -> dict[str, float]:
    """`psnr_margin` and `usage_threshold` from `conf/decision/default.yaml` (the one source)."""
    from omegaconf import OmegaConf

    from mdvq.core.compose import config_dir

    node = OmegaConf.load(config_dir() / "decision" / "default.yaml")
    return {"psnr_margin": float(node.psnr_margin), "usage_threshold": float(node.usage_threshold)}


def uniform_usage(selections: float, num_codes: int) -> float:
    """Expected usage of a perfectly uniform codebook of `num_codes` after `selections` draws:
    `1 - (1 - 1/K)^N` (the most a usage figure measured on N selections can be expected to show)."""
    if num_codes < 1 or selections < 0:
        raise ValueError(f"need num_codes >= 1 and selections >= 0, got {num_codes}, {selections}")
    return 1.0 - (1.0 - 1.0 / num_codes) ** selections


@dataclasses.dataclass(frozen=True)
class Decision:
    """Outcome of the rule: the figures compared, the thresholds, the verdict and why.

    psnr_vq, psnr_kl in dB (test split, [0,1] images); usage_vq a fraction in [0,1];
    verdict "vqvae" (continue the VQ route) or "klvae". vq_run/kl_run are the run folders the
    figures came from and data_key the data + split they were measured on, when known (the VQ
    run's); vq_data_key/kl_data_key are each run's, and data_key_forced is True when they differ
    and the decision was still made (`force=true`).
    """

    verdict: str
    psnr_vq: float
    usage_vq: float
    psnr_kl: float
    psnr_margin: float
    usage_threshold: float
    reasons: tuple[str, ...]
    vq_run: str | None = None
    kl_run: str | None = None
    data_key: str | None = None
    usage_selections: float | None = None
    num_codes: int | None = None
    usage_comparable: bool | None = None
    vq_data_key: str | None = None
    kl_data_key: str | None = None
    data_key_forced: bool = False

    @property
    def continue_vq(self) -> bool:
        """True when the VQ-VAE route continues."""
        return self.verdict == "vqvae"

    @property
    def psnr_required(self) -> float:
        """The VQ PSNR (dB) to beat: `(1 + psnr_margin) * psnr_kl`."""
        return (1.0 + self.psnr_margin) * self.psnr_kl

    def to_dict(self) -> dict:
        """JSON-ready dict of every field plus `continue_vq`, `psnr_required` and the rule."""
        out = dataclasses.asdict(self)
        out["reasons"] = list(self.reasons)
        out.update(
            continue_vq=self.continue_vq,
            psnr_required=self.psnr_required,
            rule=(
                f"continue VQ-VAE iff PSNR_vq > (1 + {self.psnr_margin:g}) * PSNR_kl "
                f"and usage_vq > {self.usage_threshold:g}; otherwise KL-VAE"
            ),
        )
        return out


def _exceeds(value: float, threshold: float) -> bool:
    """Strictly above `threshold`; equal up to float rounding (1e-9 relative) does not count."""
    return value > threshold and not math.isclose(value, threshold, rel_tol=1e-9, abs_tol=1e-12)


def decide(
    psnr_vq: float,
    usage_vq: float,
    psnr_kl: float,
    psnr_margin: float,
    usage_threshold: float,
    usage_selections: float | None = None,
    num_codes: int | None = None,
) -> Decision:
    """Apply the rule to the VQ-VAE's test PSNR (dB) and usage [0,1] and the KL-VAE's PSNR (dB).

    With `usage_selections` (code selections behind the usage figure) and `num_codes` (K), a
    usage figure resting on too few selections (a uniform codebook would not exceed the
    threshold, see `uniform_usage`) is reported as not comparable: the verdict is then the
    KL-VAE, with a reason saying that the usage could not be judged.
    """
    for name, value in (("psnr_vq", psnr_vq), ("usage_vq", usage_vq), ("psnr_kl", psnr_kl)):
        if value is None or math.isnan(float(value)):
            raise ValueError(f"{name} must be a number, got {value}")
    if not 0.0 <= usage_vq <= 1.0:
        raise ValueError(f"usage_vq is a fraction in [0,1], got {usage_vq}")
    if not (psnr_kl > 0 and math.isfinite(psnr_kl)):
        raise ValueError(f"psnr_kl must be a finite PSNR > 0 dB, got {psnr_kl}")
    if not psnr_margin >= 0:
        raise ValueError(f"psnr_margin must be >= 0 (0.10 = 10 %), got {psnr_margin}")
    if not 0.0 <= usage_threshold <= 1.0:
        raise ValueError(f"usage_threshold is a fraction in [0,1], got {usage_threshold}")
    psnr_vq, usage_vq, psnr_kl = float(psnr_vq), float(usage_vq), float(psnr_kl)
    required = (1.0 + psnr_margin) * psnr_kl
    psnr_ok = _exceeds(psnr_vq, required)
    usage_ok = _exceeds(usage_vq, usage_threshold)
    comparable = None
    if usage_selections is not None and num_codes:
        comparable = _exceeds(uniform_usage(usage_selections, int(num_codes)), usage_threshold)
    usage_line = f"codebook usage: {usage_vq:.3f} {'>' if usage_ok else 'is not >'} {usage_threshold:g}"
    if comparable is not None:
        usage_line += (f" (on {usage_selections:.0f} code selections for K={num_codes}; at most "
                       f"{min(1.0, usage_selections / num_codes):.3f} possible, a uniform codebook "
                       f"would show {uniform_usage(usage_selections, int(num_codes)):.3f})")
    reasons = [
        (f"PSNR: VQ-VAE {psnr_vq:.2f} dB {'>' if psnr_ok else 'is not >'} "
        f"(1 + {psnr_margin:g}) x KL-VAE {psnr_kl:.2f} dB = {required:.2f} dB"),
        usage_line,
    ]
    if comparable is False:
        usage_ok = False
        reasons.append(f"the usage figure rests on too few code selections to be compared with "
                       f"{usage_threshold:g}: evaluate on a larger test split (or a smaller K)")
    reasons.append("both conditions hold: continue the VQ-VAE route" if psnr_ok and usage_ok
                   else "the rule is not met: choose the KL-VAE")
    return Decision(
        verdict="vqvae" if psnr_ok and usage_ok else "klvae",
        psnr_vq=psnr_vq,
        usage_vq=usage_vq,
        psnr_kl=psnr_kl,
        psnr_margin=float(psnr_margin),
        usage_threshold=float(usage_threshold),
        reasons=tuple(reasons),
        usage_selections=None if usage_selections is None else float(usage_selections),
        num_codes=None if num_codes is None else int(num_codes),
        usage_comparable=comparable,
    )


def format_decision(decision: Decision) -> str:
    """A few lines for people: the figures, the thresholds and the verdict."""
    lines = [
        f"decision: {decision.verdict}" + (" (continue VQ-VAE)" if decision.continue_vq else "")
    ]
    lines += [f"  - {r}" for r in decision.reasons]
    if decision.data_key_forced:
        lines.append(f"  forced (force=true) on different data: data_key {decision.vq_data_key!r} "
                     f"(VQ) vs {decision.kl_data_key!r} (KL)")
    if decision.vq_run or decision.kl_run:
        lines.append(f"  VQ run: {decision.vq_run}\n  KL run: {decision.kl_run}")
    return "\n".join(lines)


def decide_runs(vq_run: str | os.PathLike, kl_run: str | os.PathLike, psnr_margin: float,
                usage_threshold: float, force: bool = False) -> Decision:
    """Apply the rule to two finished runs (folders or summary.json files).

    Reads `test/psnr`, `test/codebook_usage` (and, when logged, `test/codebook_selections`) of
    the VQ-VAE run and `test/psnr` of the KL-VAE run. Runs whose `data_key` (data + split)
    differs are refused with a ValueError naming both keys and files (their test figures come
    from different held-out sets), unless `force`: then a warning, and the decision records both
    keys and `data_key_forced`, with a reason saying so. Warns when the training precisions
    differ. Raises DataError naming the file for a missing or wrong-kind run.
    """
    vq = RunSummary.read(vq_run, model="vqvae", key="VQ_RUN (are the runs swapped?)")
    kl = RunSummary.read(kl_run, model="klvae", key="KL_RUN (are the runs swapped?)")
    forced = vq.data_key != kl.data_key
    if forced:
        what = (f"the runs were trained on different data or splits: data_key {vq.data_key!r} "
                f"({vq.path}) vs {kl.data_key!r} ({kl.path}), so their test figures come from "
                "different held-out sets")
        if not force:
            raise ValueError(f"{what}; train both on the same data (same data.*, image size and "
                             "split), or pass force=true to decide anyway (recorded in "
                             "decision.json)")
        log.warning("%s; deciding anyway (force=true)", what)
    if _precision(vq) != _precision(kl):
        log.warning("the runs trained in different precisions (%s in %s, %s in %s): the PSNR "
                    "margin compares numerics as well as latents", _precision(vq), vq.path,
                    _precision(kl), kl.path)
    selections = vq.metrics.get(SELECTIONS_KEY)
    num_codes = (vq.config.get("model") or {}).get("num_vq_embeddings")
    decision = decide(vq.metric(PSNR_KEY), vq.metric(USAGE_KEY), kl.metric(PSNR_KEY),
                      psnr_margin=psnr_margin, usage_threshold=usage_threshold,
                      usage_selections=selections, num_codes=num_codes)
    if forced:
        decision = dataclasses.replace(decision, reasons=(
            *decision.reasons, ("decided with force=true although the runs used different "
                                f"data (data_key {vq.data_key!r} vs {kl.data_key!r}): not on "
                                "the same held-out split")))
    return dataclasses.replace(decision, vq_run=str(vq.run_dir), kl_run=str(kl.run_dir),
                               data_key=vq.data_key, vq_data_key=vq.data_key,
                               kl_data_key=kl.data_key, data_key_forced=forced)


def _precision(run: RunSummary) -> str | None:
    """The precision a run trained in: the one it used (`precision`, written since bf16 became
    the default), else its configured `trainer.precision`, else None."""
    return run.data.get("precision") or (run.config.get("trainer") or {}).get("precision")


def write_decision(decision: Decision, path: str | os.PathLike) -> Path:
    """Write `decision.to_dict()` as JSON to `path` (a folder gets `decision.json`); the run
    folders are written relative to the file's folder, so the file can be shared or committed."""
    path = Path(path)
    if path.is_dir():
        path = path / DECISION_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    out = decision.to_dict()
    for key in ("vq_run", "kl_run"):
        if out.get(key):
            out[key] = Path(os.path.relpath(Path(out[key]).resolve(),
                                            path.parent.resolve())).as_posix()
    path.write_text(json.dumps(out, indent=2) + "\n")
    return path


def read_decision(path: str | os.PathLike) -> dict:
    """A `decision.json` (a file, or a folder holding one) as written by `write_decision`: the
    dict of `Decision.to_dict()`. Raises ValueError naming the file when it is missing, not
    JSON, or lacks the verdict and figures."""
    path = Path(path)
    if path.is_dir():
        path = path / DECISION_NAME
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: unreadable decision ({err})") from None
    missing = [k for k in ("verdict", "psnr_vq", "psnr_kl", "usage_vq")
               if not isinstance(data, dict) or k not in data]
    if missing:
        raise ValueError(f"{path}: not a decision (missing {', '.join(missing)})")
    return data
