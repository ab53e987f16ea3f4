"""The package order: every package stands on a floor and imports only its own floor or lower,
also inside functions, and no two packages import each other. Read bottom to top:

1. `utils`, `core`: helpers; run-folder formats, config composition, precision, `DataError`
2. `data`: spectrogram sources, datamodules and caches
3. `models`: the LightningModules and the frozen autoencoders
4. `callbacks`, `evaluation`: what watches and scores the models
5. `runs`, `benchmarks`: orchestration (training, experiments, sweeps, report, prior sampling)
6. the commands (`python -m mdvq.<name>`, the modules at the top of mdvq/)

`pytest -s tests/test_package_order.py` prints the graph; a failure prints it too.
"""

from __future__ import annotations

from collections import Counter

from test_layout import COMMANDS, PACKAGE, graph, module_name

FLOORS: dict[str, int] = {
    "mdvq.utils": 1, "mdvq.core": 1,
    "mdvq.data": 2,
    "mdvq.models": 3,
    "mdvq.callbacks": 4, "mdvq.evaluation": 4,
    "mdvq.runs": 5, "mdvq.benchmarks": 5,
    "commands": 6,
}

#: modules of the base package that land in it from other branches, by their path there
BASE_MODULES_TO_COME = {"mdvq/core/artifacts.py"}

#: (importing module, imported module) -> why this arrow may run up a floor
EXCEPTIONS: dict[tuple[str, str], str] = {}


def package(module: str) -> str:
    """The floor-holding package of a module: `mdvq.data.simulator.physics` -> `mdvq.data`;
    the commands (top level of mdvq/) and `mdvq` itself -> "commands"."""
    parts = module.split(".")
    return "commands" if len(parts) < 3 and module not in FLOORS else ".".join(parts[:2])


def arrows() -> Counter:
    """(package, package it imports) -> number of module-level import arrows."""
    found: Counter = Counter()
    for m, deps in graph().items():
        for d in deps:
            if package(m) != package(d):
                found[package(m), package(d)] += 1
    return found


def upward() -> list[tuple[str, str]]:
    """Every (module, imported module) arrow that runs up a floor and is not an exception."""
    return sorted((m, d) for m, deps in graph().items() for d in deps
                  if FLOORS[package(d)] > FLOORS[package(m)] and (m, d) not in EXCEPTIONS)


def render() -> str:
    """The floors, top first, each package with the packages it imports (arrow counts)."""
    found = arrows()
    lines = []
    for floor in sorted(set(FLOORS.values()), reverse=True):
        for pkg in sorted(p for p, f in FLOORS.items() if f == floor):
            out = sorted((d, n) for (s, d), n in found.items() if s == pkg)
            targets = ", ".join(
                f"{d.removeprefix('mdvq.')} ({n}){' UP' if FLOORS[d] > floor else ''}"
                for d, n in out)
            lines.append(f"{floor}  {pkg.removeprefix('mdvq.'):<12} -> {targets or '-'}")
    return "\n".join(lines)


def test_every_package_has_a_floor():
    packages = {package(module_name(p)) for p in PACKAGE.rglob("*.py")}
    assert packages <= set(FLOORS), f"packages without a floor: {sorted(packages - set(FLOORS))}"
    assert {package(c) for c in COMMANDS} == {"commands"}


def test_no_package_imports_a_higher_floor():
    print("\n" + render())
    up = upward()
    assert not up, ("imports that run up a floor (list a real need in EXCEPTIONS):\n"
                    + "\n".join(f"  {m} -> {d}" for m, d in up) + "\n\n" + render())


def test_no_two_packages_import_each_other():
    found = arrows()
    loops = sorted({tuple(sorted(pair)) for pair in found if pair[::-1] in found})
    assert not loops, f"package loops: {loops}\n\n{render()}"


def test_exceptions_are_still_needed():
    deps = graph()
    stale = [pair for pair in EXCEPTIONS if pair[1] not in deps.get(pair[0], set())]
    assert not stale, f"exceptions no module needs any more: {stale}"


def test_base_package_holds_the_run_folder_formats():
    base = {p.relative_to(PACKAGE.parent).as_posix() for p in (PACKAGE / "core").glob("*.py")}
    expected = {"mdvq/core/summary.py", "mdvq/core/samples.py", "mdvq/core/compose.py",
                "mdvq/core/precision.py", "mdvq/core/errors.py"}
    assert expected <= base
    # artifacts.py (artifact resolution) joins core/ when it lands; it is on floor 1 already
    assert all(package(module_name(PACKAGE.parent / p)) == "mdvq.core"
               for p in BASE_MODULES_TO_COME)
