"""The package as a user installs it: build the wheel, install it into a clean virtual
environment (no editable install, no checkout on the path) and run the commands that read
the package's data files on a tiny model.

Nothing is downloaded: the clean environment sees this interpreter's installed packages
through one `.pth` line (site-packages' own `.pth` files, e.g. an editable install of the
checkout, are not processed from there), and the wheel is installed with `--no-deps`.
"""

from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

from tiny_models import make_tiny_pair

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _build_wheel(work: Path) -> Path:
    """Build the wheel from a copy of the sources (the checkout gets no build/ or egg-info)."""
    source = work / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    dist = work / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps",
                    "--no-build-isolation", "--no-index", "--wheel-dir", str(dist), str(source)],
                   check=True, capture_output=True, text=True)
    (wheel,) = dist.glob("darwin_merge-*.whl")
    return wheel


def _clean_venv(folder: Path, wheel: Path) -> Path:
    """A venv with the wheel installed and this interpreter's dependencies visible."""
    venv.EnvBuilder(with_pip=False).create(folder)
    python = folder / "bin" / "python"
    purelib = subprocess.run([str(python), "-c",
                              "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             check=True, capture_output=True, text=True).stdout.strip()
    Path(purelib, "outer-dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q",
                    "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, text=True)
    return folder


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("wheel")
    return _clean_venv(work / "venv", _build_wheel(work))


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return dict(env, OMP_NUM_THREADS="1", PYTHONNOUSERSITE="1")


def _darwin(venv_dir: Path, cwd: Path, *args: str) -> str:
    proc = subprocess.run([str(venv_dir / "bin" / "darwin"), *args], cwd=cwd, env=_env(),
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.parametrize("name", ["darwin_merge", "darwin_recipes"])
def test_wheel_holds_every_data_file(installed, name):
    """Both packages of the wheel (the library and the recipes beside it): installed from
    the wheel only, with every non-Python file of the checkout's package."""
    python = installed / "bin" / "python"
    code = (f"import {name}, darwin_merge, sys; print({name}.__file__); "
            "print(darwin_merge.__version__); print(sys.path)")
    where, version, path = subprocess.run([str(python), "-c", code], cwd=installed,
                                          env=_env(), capture_output=True, text=True,
                                          check=True).stdout.splitlines()
    package = Path(where).parent
    assert package.is_relative_to(installed) and not package.is_relative_to(ROOT)
    # no other copy (this checkout, an editable install's source folder) is importable
    others = [e for e in ast.literal_eval(path)
              if Path(e, name).is_dir() and not Path(e).is_relative_to(installed)]
    assert others == []
    from darwin_merge import __version__

    assert version == __version__
    shipped = {p.relative_to(ROOT / "src" / name) for p in (ROOT / "src" / name).rglob("*")
               if p.is_file() and p.suffix not in (".py", ".pyc")}
    assert shipped and all((package / p).is_file() for p in shipped), \
        sorted(str(p) for p in shipped if not (package / p).is_file())


def test_installed_demo_command_reads_the_recipes_problems(installed, tmp_path):
    """`darwin demo test-items` leaves out every benchmark and demo fine-tune's training
    problems: it reads the recipes package's problems/*.yaml and the library's task files."""
    out = tmp_path / "items.jsonl"
    _darwin(installed, tmp_path, "demo", "test-items", "two_digit_arithmetic", "--out", str(out),
            "--count", "5")
    assert len(out.read_text().splitlines()) == 5


def test_installed_commands_merge_and_score_a_tiny_pair(installed, tmp_path):
    father, mother = make_tiny_pair(tmp_path / "pair")
    report = json.loads(_darwin(installed, tmp_path, "inspect", str(father), "--json"))
    assert report["family"] == "llama" and report["num_layers"] == 4
    plan = json.loads(_darwin(installed, tmp_path, "plan", "--father", str(father),
                              "--mother", str(mother), "--json"))
    assert len(plan["tensors"]) == report["num_tensors"]
    child = tmp_path / "child"
    _darwin(installed, tmp_path, "merge", "--father", str(father), "--mother", str(mother),
            "--out", str(child))
    assert (child / "darwin_merge.json").is_file()
    results = tmp_path / "results.json"
    _darwin(installed, tmp_path, "eval", str(child), "--tasks", "copa,arc_easy", "--limit", "2",
            "--out", str(results))
    record = json.loads(results.read_text())
    assert set(record["results"]) == {"copa", "arc_easy"}
    assert record["n-samples"]["copa"]["effective"] == 2
    assert record["configs"]["arc_easy"]["dataset_path"] == "allenai/ai2_arc"  # datasets.yaml
