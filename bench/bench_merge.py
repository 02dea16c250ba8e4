"""Benchmark: `darwin merge` against mergekit's `mergekit-yaml` (dare_ties) and the I/O floor.

Same pair (SmolLM2-135M-Instruct and a seeded perturbed copy written once under
.cache/bench/), same recipe (base = father, mother weight 0.5, density 0.7, no
normalisation, float32), each tool in a fresh process, alternated, repeated. The
I/O floor reads every tensor of both parents and writes the father's tensors as the
output, with nothing else. Wall time and peak RSS (ru_maxrss of the child process).

    .venv/bin/python bench/bench_merge.py [--repeats 3]

mergekit lives in its own environment, .bench-venv (never a Darwin dependency):
    python3 -m venv .bench-venv && .bench-venv/bin/pip install torch==2.13.0 \\
        && .bench-venv/bin/pip install mergekit
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / ".cache"
FATHER = CACHE / "models" / "smollm2-135m-instruct"
MOTHER = CACHE / "bench" / "smollm2-perturbed"
MERGEKIT = ROOT / ".bench-venv" / "bin" / "mergekit-yaml"
RATIO, DENSITY = 0.5, 0.7

IO_FLOOR = """
import sys
from darwin_merge.io import ModelSource, ModelWriter, atomic_output_dir
father, mother, out = sys.argv[1:4]
with ModelSource(father) as a, ModelSource(mother) as b, atomic_output_dir(out, True) as tmp:
    writer = ModelWriter(tmp)
    for name in a.names:
        b.get(name)
        writer.add(name, a.get(name))
    writer.finish()
"""


def ensure_mother() -> Path:
    """The perturbed SmolLM2 (seeded), written once, atomically."""
    if MOTHER.exists():
        return MOTHER
    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import perturbed_copy

    tmp = MOTHER.parent / f".{MOTHER.name}.tmp"
    perturbed_copy(FATHER, tmp, scale=0.02, seed=7)
    os.rename(tmp, MOTHER)
    return MOTHER


def measure(cmd: list[str]) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS in MiB) of one fresh process."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{err[-2000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def commands(work: Path) -> dict[str, list[str]]:
    genome = work / "genome.yaml"
    genome.write_text(f"global_ratio: {RATIO}\nattn_ratio: {RATIO}\nffn_ratio: {RATIO}\n"
                      f"embed_ratio: {RATIO}\n"
                      + "".join(f"block_{i}_ratio: {RATIO}\n" for i in range(6))
                      + f"density_a: {DENSITY}\ndensity_b: {DENSITY}\nmri_trust: 0\n"
                      "merge_method_weight: 1\n")
    recipe = work / "mergekit.yaml"
    recipe.write_text(f"merge_method: dare_ties\nbase_model: {FATHER}\nmodels:\n"
                      f"  - model: {FATHER}\n  - model: {MOTHER}\n    parameters:\n"
                      f"      weight: {RATIO}\n      density: {DENSITY}\n"
                      "parameters:\n  normalize: false\ndtype: float32\n")
    python = str(ROOT / ".venv" / "bin" / "python")
    return {
        "io_floor": [python, "-c", IO_FLOOR, str(FATHER), str(MOTHER), str(work / "floor")],
        "darwin": [str(ROOT / ".venv" / "bin" / "darwin"), "merge", "--father", str(FATHER),
                   "--mother", str(MOTHER), "--genome", str(genome), "--out",
                   str(work / "darwin"), "--overwrite"],
        "mergekit": [str(MERGEKIT), str(recipe), str(work / "mergekit")],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    ensure_mother()
    results: dict[str, list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(dir=CACHE / "bench") as tmp:
        work = Path(tmp)
        cmds = commands(work)
        if not MERGEKIT.exists():
            print(f"mergekit not installed at {MERGEKIT}; measuring Darwin and the floor only")
            del cmds["mergekit"]
        for _ in range(args.repeats):
            for name, cmd in cmds.items():
                if name == "mergekit":
                    subprocess.run(["rm", "-rf", str(work / "mergekit")], check=True)
                results.setdefault(name, []).append(measure(cmd))
    summary = {name: {"wall_s": statistics.median(r[0] for r in runs),
                      "cpu_s": statistics.median(r[1] for r in runs),
                      "peak_rss_mib": statistics.median(r[2] for r in runs),
                      "runs": runs} for name, runs in results.items()}
    darwin, floor = summary["darwin"], summary["io_floor"]
    ratios = {"darwin/floor wall": darwin["wall_s"] / floor["wall_s"],
              "darwin/floor cpu": darwin["cpu_s"] / floor["cpu_s"]}
    if "mergekit" in summary:
        mk = summary["mergekit"]
        ratios.update({"darwin/mergekit wall": darwin["wall_s"] / mk["wall_s"],
                       "darwin/mergekit cpu": darwin["cpu_s"] / mk["cpu_s"],
                       "darwin/mergekit peak RSS": darwin["peak_rss_mib"] / mk["peak_rss_mib"]})
    summary["ratios"] = ratios
    print(json.dumps(summary, indent=1))
    print("\n| run | wall s (median) | CPU s (median) | peak RSS MiB (median) |\n|---|---|---|---|")
    for name in results:
        row = summary[name]
        print(f"| {name} | {row['wall_s']:.1f} | {row['cpu_s']:.1f} | {row['peak_rss_mib']:.0f} |")
    print("\n" + "\n".join(f"- {k}: {v:.2f}" for k, v in ratios.items()))


if __name__ == "__main__":
    main()
