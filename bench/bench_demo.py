"""`make demo` from a fresh clone, this commit beside an earlier one, on one machine in turn.

    python bench/bench_demo.py --old de7f2d4 --old-make-args "DEMO_ARGS=--eval-dtype float32"
        [--new HEAD] [--work /tmp/bench-demo] [--order new,old]

Each commit is cloned afresh into WORK and runs its own `make demo` (set-up, the base model's
import, scan, evolve, merge, health, holdout, card) with nothing else cached but the two
specialist fine-tunes. Those come from this checkout's cache (float32 training, as the
current code makes them) and are linked into each clone's cache under the folder name that
commit's own code computes: the fine-tunes' training is not what is timed (issue 34 reports it
apart), and a commit whose recipe hash differs (de7f2d4 trained with bfloat16 autocast, which
this AVX2 CPU emulates about 16x slower) would otherwise spend hours training. Both commits so
merge the same parents. `--old-make-args` / `--new-make-args` are added to that commit's
`make demo` line (one argument): de7f2d4's demo ran its forward passes in bfloat16 on any CPU
(emulated, several times slower on one without AMX), where today's code picks float32 there,
so a like-for-like run gives de7f2d4 `DEMO_ARGS=--eval-dtype float32`. The 1-thread matmul
yardstick is measured before each run; the runs go in --order (one name alone times that
commit only); every run, and the ratio new / old when both ran, is printed and written to
WORK/bench-demo.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Printed by each commit's own code: the folder its demo looks for, per specialist role.
FOLDERS_OF = """
import json, sys
from pathlib import Path
try:
    from darwin_recipes.demo.mother import mother_folder
    from darwin_recipes.demo.run import SPECIALIST_RECIPES
except ImportError:  # a commit from before the recipes package (issue 35)
    from darwin_merge.demo.mother import mother_folder
    from darwin_merge.demo.run import SPECIALIST_RECIPES
base, cache = Path(sys.argv[1]), Path(sys.argv[2])
print(json.dumps({role: str(mother_folder(base, cache, recipe))
                  for role, recipe in SPECIALIST_RECIPES["smollm2"].items()}))
"""


def fine_tune_folders(src: Path, cache: Path) -> dict[str, Path]:
    """The specialists' cache folders as the code under `src` names them."""
    base = cache / "models" / "smollm2-135m-instruct"
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = subprocess.run([sys.executable, "-c", FOLDERS_OF, str(base), str(cache)],
                         env=env, check=True, capture_output=True, text=True).stdout
    return {role: Path(path) for role, path in json.loads(out).items()}


def fresh_clone(commit: str, folder: Path, own_cache: Path) -> None:
    """Clone this repository at `commit` into `folder` and link the fine-tunes into its cache."""
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    subprocess.run(["git", "-C", str(folder), "checkout", "-q", commit], check=True)
    ours = fine_tune_folders(ROOT / "src", own_cache)
    theirs = fine_tune_folders(folder / "src", folder / ".cache")
    for role, source in ours.items():
        if not (source / "config.json").is_file():
            sys.exit(f"bench_demo: {source} is missing: run `make demo` here first to train it")
        theirs[role].parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["cp", "-rl", str(source.resolve()), str(theirs[role])], check=True)


def yardstick() -> float:
    sys.path.insert(0, str(ROOT / "src"))
    from darwin_merge.resources import matmul_yardstick

    return round(matmul_yardstick(), 2)


def timed_demo(folder: Path, log: Path, make_args: list[str]) -> float:
    """Seconds `make demo` takes in `folder`, its output in `log`."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    started = time.perf_counter()
    with log.open("w") as out:
        rc = subprocess.run(["make", "demo", *make_args], cwd=folder, env=env, stdout=out,
                            stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - started
    if rc:
        sys.exit(f"bench_demo: `make demo` failed in {folder} (exit {rc}); see {log}")
    return round(seconds, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--old", required=True, help="the earlier commit")
    parser.add_argument("--new", default="HEAD")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench-demo"))
    parser.add_argument("--cache", type=Path, default=ROOT / ".cache",
                        help="where this checkout's float32 fine-tunes are")
    parser.add_argument("--order", default="new,old")
    for name in ("new", "old"):
        parser.add_argument(f"--{name}-make-args", default="",
                            help=f"one argument added to the {name} commit's `make demo`")
    args = parser.parse_args()
    order = args.order.split(",")
    if args.work.exists():
        sys.exit(f"bench_demo: {args.work} exists; remove it or name another --work")
    commits = {name: subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short",
                                     getattr(args, name)], check=True, capture_output=True,
                                    text=True).stdout.strip() for name in ("new", "old")}
    for name in order:
        fresh_clone(commits[name], args.work / name, args.cache)
    runs = {}
    for name in order:
        extra = getattr(args, f"{name}_make_args")
        make_args = [extra] if extra else []
        before = yardstick()
        seconds = timed_demo(args.work / name, args.work / f"{name}.log", make_args)
        runs[name] = {"commit": commits[name], "make_args": make_args, "seconds": seconds,
                      "yardstick_s": before,
                      "finished": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
        print(f"{name} {commits[name]}: make demo {' '.join(make_args)} {seconds / 60:.1f} "
              f"min (yardstick {before} s before)", flush=True)
        result = {"runs": runs}
        if {"new", "old"} <= set(runs):
            result["ratio_new_over_old"] = round(runs["new"]["seconds"]
                                                 / runs["old"]["seconds"], 3)
            print(f"new / old = {result['ratio_new_over_old']:.2f}x")
        (args.work / "bench-demo.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
