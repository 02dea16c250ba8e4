"""The golden tiny run: what a change of structure must leave as it was (issue 35).

    python scripts/golden-run.py write   # run the tiny demo, keep its snapshot
    python scripts/golden-run.py check   # run it again, compare with the snapshot

Both run `darwin demo run --family tiny` (its trio trained once and cached in .cache) into
a temporary folder and read back everything the run wrote: every JSON and YAML record,
with timestamps, durations, versions and absolute paths masked, and a fingerprint of each
of the child's tensors. `write` keeps it in tests/golden/tiny-demo.json with the commit it
was taken at; `check` compares: strings, integers, genome hashes, plan rows and tensors
exactly, every other number to 1e-9 relative. Regenerate with `write` when a change alters
the records on purpose, and say so in its commit.

The snapshot is a same-machine instrument: the trio is trained on this CPU and the scores
come from its float kernels, so another CPU may differ in the last bits. Take it and check
it on one machine, before and after the change.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "tiny-demo.json"
RELATIVE = 1e-9
# Keys whose values change from run to run by nature: when, how long, which versions, how
# it was called; and the scan's two hashes of its inputs, which hash the task files'
# absolute paths (the inputs beside them, and the attribution they give, are compared).
MASKED_KEY = re.compile(r"(^|_)(created|seconds|time|timings|duration|elapsed|wall|date|"
                        r"versions?|darwin_version|command|hostname|threads|"
                        r"inputs_sha256|attribution_items_sha256)($|_)")
# Inside strings: durations and rates printed into sentences.
DURATION = re.compile(r"\b\d+(\.\d+)?\s?(s|ms|min|seconds|minutes|it/s)\b")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?([+-]\d\d:\d\d|Z)?")


def masked(value, folder: str):
    """A record with what changes from run to run replaced by a placeholder."""
    if isinstance(value, dict):  # keys too: a task file is named by its path
        return {masked(k, folder): ("<masked>" if MASKED_KEY.search(str(k))
                                    else masked(v, folder)) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, folder) for v in value]
    if isinstance(value, str):
        text = value.replace(folder, "<run>").replace(str(ROOT), "<repo>")
        text = TIMESTAMP.sub("<time>", text)
        return DURATION.sub("<duration>", text)
    return value


def tensor_fingerprints(folder: Path) -> dict[str, str]:
    """Each tensor of the child's safetensors files: dtype, shape and a digest of its bytes."""
    import torch
    from safetensors import safe_open

    prints = {}
    for path in sorted(folder.glob("*.safetensors")):
        with safe_open(path, framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                tensor = handle.get_tensor(name).contiguous()
                raw = tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
                digest = hashlib.blake2b(raw, digest_size=16).hexdigest()
                prints[name] = f"{tensor.dtype}:{tuple(tensor.shape)}:{digest}"
    return prints


def snapshot(run: Path) -> dict:
    """Everything the run folder holds that a change of structure must not change."""
    import yaml

    records = {}
    for path in sorted(run.rglob("*")):
        rel = str(path.relative_to(run))
        if path.suffix == ".json":
            records[rel] = masked(json.loads(path.read_text(encoding="utf-8")), str(run))
        elif path.suffix in (".yaml", ".yml"):
            records[rel] = masked(yaml.safe_load(path.read_text(encoding="utf-8")), str(run))
    child = run / "child"
    return {"records": records, "child_tensors": tensor_fingerprints(child)}


def differences(golden, now, where: str = "") -> list[str]:
    """Where `now` differs from `golden`: numbers beyond RELATIVE, anything else at all."""
    if isinstance(golden, dict) and isinstance(now, dict):
        out = [f"{where}/{k}: missing now" for k in golden if k not in now]
        out += [f"{where}/{k}: new" for k in now if k not in golden]
        for key in golden.keys() & now.keys():
            out += differences(golden[key], now[key], f"{where}/{key}")
        return out
    if isinstance(golden, list) and isinstance(now, list):
        if len(golden) != len(now):
            return [f"{where}: {len(golden)} entries, now {len(now)}"]
        return [d for i, (g, n) in enumerate(zip(golden, now, strict=True))
                for d in differences(g, n, f"{where}[{i}]")]
    if isinstance(golden, float) and isinstance(now, float):
        if math.isnan(golden) and math.isnan(now):
            return []
        if math.isclose(golden, now, rel_tol=RELATIVE, abs_tol=1e-12):
            return []
        return [f"{where}: {golden!r}, now {now!r}"]
    return [] if golden == now and type(golden) is type(now) else \
        [f"{where}: {golden!r}, now {now!r}"]


def run_tiny_demo(out: Path) -> None:
    darwin = Path(sys.executable).with_name("darwin")
    subprocess.run([str(darwin), "demo", "run", "--family", "tiny", "--cache",
                    str(ROOT / ".cache"), "--out", str(out)], check=True, cwd=ROOT)


def commit() -> str:
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                          text=True, cwd=ROOT).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("action", choices=("write", "check"))
    parser.add_argument("--run", type=Path, help="read this finished run folder instead of "
                        "running the tiny demo")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="golden-") as scratch:
        run = args.run
        if run is None:
            run = Path(scratch) / "run"
            run_tiny_demo(run)
        now = snapshot(run.resolve())
    if args.action == "write":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(json.dumps({"commit": commit(), **now}, indent=1, sort_keys=True)
                          + "\n", encoding="utf-8")
        print(f"golden snapshot of the tiny demo at {commit()}: {GOLDEN.relative_to(ROOT)}")
        return 0
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    found = differences({k: golden[k] for k in now}, now)
    for line in found[:50]:
        print(line)
    print(f"{len(found)} differences from the golden run taken at {golden['commit']}"
          if found else f"the tiny demo matches the golden run taken at {golden['commit']}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
