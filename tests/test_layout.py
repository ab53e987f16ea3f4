"""The package's shape: library below, commands on top, no import cycles, every package
installed, and a plain (non-editable) `pip install .` that runs from any folder."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import tomllib
from conftest import ROOT

PACKAGE = ROOT / "mdvq"
#: the command modules (top level of mdvq/, `python -m mdvq.<name>`); nothing else is top level
COMMANDS = {"mdvq.run", "mdvq.sample", "mdvq.evaluate", "mdvq.decide", "mdvq.sweep",
            "mdvq.report", "mdvq.bench"}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def mdvq_imports(path: Path) -> set[str]:
    """Every mdvq module `path` imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mdvq")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mdvq"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the mdvq modules it imports (names that are not modules are dropped)."""
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    return {name: {m for m in mdvq_imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def test_top_level_modules_are_only_commands():
    top = {module_name(p) for p in PACKAGE.glob("*.py")} - {"mdvq"}
    assert top <= COMMANDS, f"library code at the top level: {sorted(top - COMMANDS)}"


def test_no_library_module_imports_a_command():
    offenders = {m: sorted(deps & COMMANDS) for m, deps in graph().items()
                 if m not in COMMANDS and deps & COMMANDS}
    assert not offenders, offenders


def test_no_import_cycles():
    deps = graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for d in sorted(deps[m]):
            # `import mdvq.a.b` runs mdvq/a/__init__ first: a package's own children don't count
            if d.startswith(m + ".") or m.startswith(d + "."):
                continue
            if state.get(d) == 1:
                raise AssertionError(f"import cycle: {' -> '.join(stack[stack.index(d):] + [d])}")
            if d not in state:
                visit(d)
        stack.pop()
        state[m] = 2

    for m in sorted(deps):
        if m not in state:
            visit(m)


def test_pyproject_lists_every_package_and_every_command():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    listed = set(project["tool"]["setuptools"]["packages"])
    found = {module_name(p.parent / "__init__.py") for p in PACKAGE.rglob("__init__.py")}
    assert listed == found | {"mdvq.conf"}
    scripts = project["project"]["scripts"]
    present = {m for m in COMMANDS if (ROOT / (m.replace(".", "/") + ".py")).exists()}
    assert {v.split(":")[0] for v in scripts.values()} == present
    # PEP 561: the type hints ship (the installed copy has it: test_plain_install_...)
    assert (PACKAGE / "py.typed").is_file()
    assert "py.typed" in project["tool"]["setuptools"]["package-data"]["mdvq"]


def test_plain_install_runs_from_another_folder(tmp_path):
    """`pip install .` (not editable) into a fresh virtualenv, then `python -m mdvq.run` in an
    empty folder: the configs come from the installed package. The dependencies are borrowed
    from this interpreter's site-packages (a .pth file) so nothing is downloaded."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    Path(site, "borrowed-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    source = tmp_path / "source"  # build from a copy: setuptools writes build/ into the tree
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("mdvq", "conf"):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    build = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--quiet",
         "--target", site, "--no-compile", str(source)],
        capture_output=True, text=True, timeout=300, check=False)
    assert build.returncode == 0, build.stderr[-3000:]
    installed = Path(site) / "mdvq"
    assert (installed / "conf" / "config.yaml").is_file()
    assert (installed / "conf" / "model" / "codebook" / "healthy.yaml").is_file()
    assert (installed / "py.typed").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run(
        [py, "-m", "mdvq.run", "trainer.fast_dev_run=true", "data.image_size=[16,16]",
         "data.datamodule.source.num_per_class=4", "data.datamodule.source.num_subjects=4",
         "data.datamodule.source.progress=false", "model.num_vq_embeddings=16",
         "trainer.enable_progress_bar=false", "trainer.accelerator=cpu"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    where = subprocess.run([py, "-c", "import mdvq; print(mdvq.__file__)"], cwd=elsewhere,
                           env=env, capture_output=True, text=True, check=True).stdout
    assert where.startswith(site), where  # the installed copy ran, not the checkout
    summaries = list((elsewhere / "outputs").rglob("summary.json"))
    assert len(summaries) == 1 and '"status": "finished"' in summaries[0].read_text()


@pytest.mark.parametrize("command", ["mdvq.sample", "mdvq.decide", "mdvq.sweep", "mdvq.evaluate"])
def test_every_command_prints_its_usage(command):
    from conftest import run_cli

    proc = run_cli([command, "--help"], timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: python -m {command}")
