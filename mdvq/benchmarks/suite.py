"""One benchmark run of `python -m mdvq.bench`: the sections (`Bench`) and the markdown report
(`render`). Sections and their wanted figures: the command's docstring and
experiments/bench/README.md."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from mdvq.benchmarks import builders, loops
from mdvq.benchmarks.memory import PeakMemory
from mdvq.benchmarks.tables import markdown_table
from mdvq.benchmarks.timing import interleaved, marginal_cost
from mdvq.utils import cli

SECTIONS = ("framework", "data", "sampling", "switches")
PARITY_PRECISION = "32-true"
"""Precision of the framework arm compared with the raw loop (float32, as the raw loop runs),
whatever `trainer.precision` says; the `bf16` switch is measured as its own arm."""
SWITCHES = ("channels_last", "fused", "bf16", "compile")
"""Switch names of `switches=`: the perf callback's channels_last and compile
(conf/callbacks/performance.yaml), `model.optimizer.fused`, `trainer.precision=bf16-mixed`."""


def ints(values: list[str], key: str) -> list[int]:
    try:
        out = [int(v) for v in values]
    except ValueError:
        raise cli.UsageError(f"{key}={','.join(values)}: expected integers") from None
    if not out or min(out) < 1:
        raise cli.UsageError(f"{key}: every value must be >= 1, got {out}")
    return out


class Bench:
    """State of one benchmark run: options, results per section, peak memory per stage."""

    def __init__(self, opts: dict, device: str, work: Path):
        self.opts, self.device, self.work = opts, device, work
        self.counts = opts["batches"]
        self.results: dict = {}
        self.memory: dict[str, dict] = {}
        self.models: dict[str, builders.BenchModel] = {}

    def say(self, text: str) -> None:
        print(text, flush=True)

    def model(self, name: str) -> builders.BenchModel:
        if name not in self.models:
            self.models[name] = builders.bench_model(
                name, max(self.counts), self.opts["size"], self.work, self.opts["batch_size"])
        return self.models[name]

    def tracked(self, stage: str, fn):
        """`fn` wrapped to record the largest peak memory of its calls under `stage`."""
        def run(*args, **kwargs):
            with PeakMemory() as mem:
                out = fn(*args, **kwargs)
            self.remember(stage, mem.result())
            return out
        return run

    def remember(self, stage: str, res: dict) -> None:
        """Keep, per stage, the lowest start, the largest peak and the largest rise of a call
        over its start (MiB)."""
        res = {**res, "rss_rise_mb": None if res["rss_start_mb"] is None
               else round(res["rss_peak_mb"] - res["rss_start_mb"], 1)}
        old = self.memory.get(stage)
        if old is not None:
            for key, pick in (("rss_start_mb", min), ("rss_peak_mb", max), ("rss_rise_mb", max),
                              ("cuda_peak_mb", max)):
                values = [v for v in (old[key], res[key]) if v is not None]
                res[key] = pick(values) if values else None
        self.memory[stage] = res

    def time_arms(self, arms: dict) -> dict:
        """Interleaved timing of `arms` (name -> fn(n)); arms that raise get an error entry."""
        errors: dict[str, str] = {}

        def guard(name, fn):
            def arm(n):
                if name in errors:
                    return
                try:
                    fn(n)
                except (RuntimeError, ValueError, TypeError, NotImplementedError) as err:
                    # a switch this machine lacks (e.g. bf16 or fused on an old CPU): reported
                    errors[name] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            return arm

        points = interleaved({k: guard(k, f) for k, f in arms.items()}, self.counts,
                             self.opts["repeats"],
                             on_run=lambda a, n, s: self.say(f"  {a:<28} {n:>3} batches {s:7.2f} s"))
        fits = {}
        for name, pts in points.items():
            if name in errors:
                fits[name] = {"per_batch_s": None, "fixed_s": None, "error": errors[name]}
            else:
                slope, fixed = marginal_cost(pts)
                fits[name] = {"per_batch_s": slope, "fixed_s": fixed, "points": pts}
        return fits

    # ------------------------------------------------------------------------- sections
    def framework(self) -> None:
        rows = []
        for name in self.opts["models"]:
            bm = self.model(name)
            self.say(f"framework vs raw loop: {name} (batch {bm.batch})")
            fits = self.time_arms({
                "raw": self.tracked(f"train {name} (raw loop)",
                                    lambda n, bm=bm: loops.raw_run(bm, n, self.device)),
                "framework": self.tracked(f"train {name} (Lightning)", lambda n, bm=bm: (
                    loops.framework_run(bm, n, self.device, precision=PARITY_PRECISION))),
            })
            raw, fw = fits["raw"]["per_batch_s"], fits["framework"]["per_batch_s"]
            rows.append({"model": name, "batch": bm.batch, "raw s/batch": raw,
                         "framework s/batch": fw,
                         "ratio raw/framework": raw / fw if raw and fw and fw > 0 else None,
                         "framework fixed s": fits["framework"]["fixed_s"],
                         "raw fixed s": fits["raw"]["fixed_s"], "fits": fits})
        self.results["framework"] = rows

    def switches(self) -> None:
        bm = self.model("vqvae")
        kwargs_of = {"channels_last": {"channels_last": True}, "fused": {"fused": True},
                     "bf16": {"precision": "bf16-mixed"}, "compile": {"compile": True}}

        def framework(*names):  # float32 unless the bf16 switch is among `names`
            kw = {"precision": PARITY_PRECISION}
            for name in names:
                kw.update(kwargs_of[name])
            return lambda n: loops.framework_run(bm, n, self.device, **kw)

        variants = {"raw loop": lambda n: loops.raw_run(bm, n, self.device),
                    "framework": framework()}
        for s in self.opts["switches"]:
            variants[f"framework + {s}"] = framework(s)
        combo = list(self.opts["switches"])
        if "fused" in combo and "bf16" in combo:  # Lightning: a fused optimiser under mixed
            combo.remove("fused")  # precision cannot clip gradients (trainer.gradient_clip_val)
        if len(combo) > 1:
            variants["framework + " + " + ".join(combo)] = framework(*combo)
        self.say(f"switches on the default autoencoder (vqvae, batch {bm.batch})")
        fits = self.time_arms({k: self.tracked(f"train vqvae ({k})", f)
                               for k, f in variants.items()})
        raw = fits["raw loop"]["per_batch_s"]
        rows = []
        for k, f in fits.items():
            per = f["per_batch_s"]
            rows.append({"variant": k, "s/batch": per,
                         "speed-up vs raw": raw / per if raw and per and per > 0 else None,
                         "fixed s": f["fixed_s"], "note": f.get("error", ""), "fit": f})
        self.results["switches"] = rows

    def data(self) -> None:
        from mdvq.benchmarks.data import data_rates

        self.say("data pipeline")
        tiny = builders.TINY_DATA_SECTION if self.opts["size"] == "tiny" else []
        rates = self.tracked("data: simulate + cached loader", data_rates)(
            self.work / "data-cache", self.opts["num_per_class"], overrides=tiny)
        fw = {r["model"]: r for r in self.results.get("framework", [])}
        consume = None
        if "vqvae" in fw and fw["vqvae"]["framework s/batch"]:
            consume = fw["vqvae"]["batch"] / fw["vqvae"]["framework s/batch"]
        else:  # measure the VQ-VAE's consumption here
            bm = self.model("vqvae")
            fits = self.time_arms({"framework": lambda n: loops.framework_run(bm, n, self.device)})
            if fits["framework"]["per_batch_s"]:
                consume = bm.batch / fits["framework"]["per_batch_s"]
        rates["vqvae_consumes_per_s"] = None if consume is None else round(consume, 1)
        rates["loader_over_consumption"] = (None if not consume
                                            else round(rates["loader_per_s"] / consume, 1))
        self.results["data"] = rates

    def sampling(self) -> None:
        from mdvq.benchmarks.sampling import sampling_rates
        from mdvq.runs.prior_sampling import load_prior

        steps = ints(self.opts["steps"], "steps")
        rows = []
        for name in [m for m in builders.PRIORS if m in self.opts["models"]]:
            given = self.opts[name]
            if given:
                module, source = load_prior(given, self.device)
                origin = f"trained ({source})"
            else:
                module, origin = self.model(name).build(), "random weights"
            self.say(f"sampling: {name} ({origin})")
            with PeakMemory() as mem:
                for r in sampling_rates(module, steps, self.opts["samples"], device=self.device):
                    rows.append({"prior": name, "weights": origin, "samples": self.opts["samples"],
                                 "guidance": float(module.hparams.sample_guidance), **r})
            self.remember(f"sample {name}", mem.result())
        self.results["sampling"] = rows


def render(bench: Bench, info: dict, argv: list[str], wall_s: float) -> str:
    """The markdown report: header (command, commit, machine), then one table per section."""
    r = bench.results
    out = ["# mdvq benchmark", "",
           f"- command: `python -m mdvq.bench {' '.join(argv)}`",
           (f"- commit {info['commit']}; {info['device']}; CPU {info['cpu']}, {info['cores']} "
           f"cores, {info['torch_threads']} torch threads; load average {info['load_avg']} at "
           f"the end; torch {info['torch']}, lightning {info['lightning']}, diffusers "
           f"{info['diffusers']}, Python {info['python']}"),
           (f"- marginal cost: wall time fitted against batch counts {bench.counts}, "
           f"{bench.opts['repeats']} interleaved repeats; size={bench.opts['size']}; "
           f"{wall_s:.0f} s in all"), ""]
    if "framework" in r:
        out += ["## Framework vs raw diffusers loop (seconds per training batch)", "",
                markdown_table(r["framework"], ["model", "batch", "raw s/batch",
                                                "framework s/batch", "ratio raw/framework",
                                                "framework fixed s", "raw fixed s"],
                               numeric=["batch", "raw s/batch", "framework s/batch",
                                        "ratio raw/framework", "framework fixed s",
                                        "raw fixed s"]), ""]
    if "switches" in r:
        out += ["## Performance switches on the default autoencoder (vqvae)", "",
                markdown_table(r["switches"], ["variant", "s/batch", "speed-up vs raw",
                                               "fixed s", "note"],
                               numeric=["s/batch", "speed-up vs raw", "fixed s"]), ""]
    if "data" in r:
        d = r["data"]
        out += ["## Data pipeline (spectrograms/s)", "",
                markdown_table([d], ["n", "generate_s", "simulated_per_s", "cached_setup_s",
                                     "loader_per_s", "vqvae_consumes_per_s",
                                     "loader_over_consumption", "batch_size", "image_size"],
                               numeric=["n", "generate_s", "simulated_per_s", "cached_setup_s",
                                        "loader_per_s", "vqvae_consumes_per_s",
                                        "loader_over_consumption"]), ""]
    if "sampling" in r:
        out += ["## Sampling (samples/s against steps)", "",
                markdown_table(r["sampling"], ["prior", "weights", "samples", "guidance",
                                               "steps", "seconds", "samples_per_s"],
                               numeric=["samples", "guidance", "steps", "seconds",
                                        "samples_per_s"]), ""]
    if bench.memory:
        rows = [{"stage": k, **v} for k, v in bench.memory.items()]
        out += ["## Peak memory per stage (MiB)", "",
                markdown_table(rows, ["stage", "rss_start_mb", "rss_peak_mb", "rss_rise_mb",
                                     "rss_peak_scope", "cuda_peak_mb"],
                               numeric=["rss_start_mb", "rss_peak_mb", "rss_rise_mb",
                                        "cuda_peak_mb"]), ""]
    return "\n".join(out)


def run_sections(opts: dict, device: str) -> tuple[Bench, float]:
    """Run the sections of `opts["sections"]` in their fixed order (data reuses the framework's
    VQ-VAE figure) in a temporary work folder; returns the bench and the wall time (s)."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="mdvq-bench-") as tmp:
        bench = Bench(opts, device, Path(tmp))
        for section in SECTIONS:
            if section in opts["sections"]:
                getattr(bench, section)()
    return bench, time.perf_counter() - started
