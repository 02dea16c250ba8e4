"""Reliability: fuzzed genome and recipe parsing, interrupted and concurrent merges,
memory refused up front, non-finite values, and one exit code per class of user error.

Interruption tests run `darwin merge` in a subprocess that pauses at its first write
(a wrapper around the real CLI), so the signal always lands mid-write, with no timing
guesswork. Untrusted model files are covered in test_reliability_io.py; the table of
all cases is docs/RELIABILITY.md.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.torch import load_file, save_file

from darwin_merge import resources
from darwin_merge.cli import main
from darwin_merge.errors import (
    IncompatibleModelsError,
    ModelFormatError,
    NumericalError,
    OutputError,
    ResourceError,
    StorageError,
    UsageError,
)
from darwin_merge.evolve.recipe import build_recipe, load_recipe, parse_fitness
from darwin_merge.genome import Genome, genome_from_dict, load_genome
from darwin_merge.io import ModelSource
from darwin_merge.merge import ParentTensors, merge_models
from tiny_models import make_tiny, perturbed_copy

FIELDS = list(Genome.model_fields)
ANY_VALUE = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**400,
                                                                max_value=10**400),
    st.text(max_size=6), st.booleans(), st.none(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
ANY_KEY = st.one_of(st.sampled_from(FIELDS), st.text(max_size=8), st.integers())
FUZZ = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def one_line(exc: Exception) -> bool:
    return "\n" not in str(exc) and bool(str(exc).strip())


def accepted_or_refused(function, *args, mentions: str = ""):
    """`function(*args)`, or None when it refused the input with a one-line UsageError
    (that names `mentions`, if given): the two outcomes a fuzzed input may have."""
    try:
        return function(*args)
    except UsageError as exc:
        assert one_line(exc) and mentions in str(exc)
        return None


def darwin_line(err: str) -> str:
    """The one line Darwin printed about an error (progress bars may share stderr)."""
    lines = [line for line in err.splitlines() if line.startswith("darwin")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# -- fuzzing: genome ----------------------------------------------------------------
@FUZZ
@given(st.dictionaries(ANY_KEY, ANY_VALUE, max_size=6))
def test_genome_from_random_mappings_is_valid_or_a_usage_error(data):
    genome = accepted_or_refused(genome_from_dict, data)
    if genome is None:
        return
    assert all(0.0 <= v <= 1.0 and math.isfinite(v) for v in genome.values())
    assert set(data) <= set(FIELDS)


@FUZZ
@given(st.one_of(st.text(max_size=200),
                 st.dictionaries(ANY_KEY, ANY_VALUE, max_size=6).map(yaml.safe_dump),
                 st.binary(max_size=100)))
@example("attn_ratio: 2001-13-01")  # YAML dates that do not exist raise ValueError
@example("[" * 3000)  # deep nesting: RecursionError in the YAML parser
@example("attn_ratio: " + "9" * 400)  # an int too large for a float
@example(b"\xff\xfeattn_ratio: 0.5")  # not UTF-8
@example("attn_ratio: .nan")
def test_genome_file_with_random_content_is_valid_or_a_usage_error(tmp_path, content):
    path = _write(tmp_path / "genome.yaml", content)
    genome = accepted_or_refused(load_genome, path, mentions=str(path))
    if genome is None:
        return
    assert all(0.0 <= v <= 1.0 for v in genome.values())


# -- fuzzing: search recipe ---------------------------------------------------------
RECIPE_FIELDS = ["father", "mother", "base", "fitness", "out", "scan", "trials", "timeout",
                 "phase1_steps", "top_k", "limit", "holdout_limit", "extra_tasks", "storage",
                 "study", "device", "dtype", "seed", "batch_size", "sigma0", "cma", "popsize",
                 "probe_max_tokens", "probe_max_prompts"]
VALID = {"father": "f", "mother": "m", "fitness": {"arc_easy": 1.0}, "out": "o"}
FITNESS_VALUE = st.one_of(ANY_VALUE, st.dictionaries(
    st.text(max_size=5), st.one_of(st.floats(allow_nan=True), st.integers(), st.text(max_size=3)),
    max_size=3))


def accepted_recipe_is_sane(recipe) -> None:
    assert all(math.isfinite(w) and w >= 0 for w in recipe.fitness.values())
    assert math.isclose(sum(recipe.weights.values()), 1.0)
    assert min(recipe.trials, recipe.phase1_steps, recipe.top_k, recipe.batch_size,
               recipe.popsize, recipe.probe_max_tokens) >= 1
    assert recipe.sigma0 is None or (recipe.sigma0 > 0 and math.isfinite(recipe.sigma0))


@FUZZ
@given(st.dictionaries(st.sampled_from(RECIPE_FIELDS) | st.text(max_size=6),
                       FITNESS_VALUE, max_size=5))
def test_build_recipe_with_random_values_is_sane_or_a_usage_error(values):
    recipe = accepted_or_refused(lambda: build_recipe(**{**VALID, **values}))
    if recipe is not None:
        accepted_recipe_is_sane(recipe)


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=100),
                 st.dictionaries(st.sampled_from(RECIPE_FIELDS) | st.text(max_size=6) |
                                 st.integers(), FITNESS_VALUE, max_size=5).map(
                     lambda d: yaml.safe_dump({**VALID, **d}))))
@example("father: f\nmother: m\nout: o\nfitness: arc_easy=nan")
@example("father: f\nmother: m\nout: o\nfitness: {a: 1}\n7: x")  # a key that is no name
@example("father: f\nmother: m\nout: o\nfitness: {a: 1}\nsigma0: .inf")
@example("seed: 2001-13-01")
def test_recipe_file_with_random_content_is_sane_or_a_usage_error(tmp_path, content):
    path = _write(tmp_path / "recipe.yaml", content)
    recipe = accepted_or_refused(load_recipe, path)
    if recipe is not None:
        accepted_recipe_is_sane(recipe)


@FUZZ
@given(st.text(max_size=60))
@example("arc_easy=nan")
@example("arc_easy=1e999")
def test_parse_fitness_of_random_text_is_a_mapping_or_a_usage_error(text):
    weights = accepted_or_refused(parse_fitness, text)
    if weights is None:
        return
    assert weights and all(isinstance(w, float) for w in weights.values())
    # whatever parse_fitness lets through, the recipe refuses non-finite weights
    if not all(math.isfinite(w) for w in weights.values()):
        with pytest.raises(UsageError, match="finite"):
            build_recipe(**{**VALID, "fitness": weights})


# -- interrupted and concurrent merges ----------------------------------------------
PAUSING_MERGE = """
import signal, sys
# as in a terminal: a test runner started in the background may pass SIGINT on ignored
signal.signal(signal.SIGINT, signal.default_int_handler)
from darwin_merge.cli import main
from darwin_merge.io import stream

real_write = stream.StreamingWriter.write
paused = []

def write(self, name, chunk):
    if not paused:  # the first chunk: tell the test, then wait for a line on stdin
        paused.append(name)
        print("writing", flush=True)
        sys.stdin.readline()
    return real_write(self, name, chunk)

stream.StreamingWriter.write = write
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def pair(tiny_dir) -> tuple[Path, Path]:
    father = make_tiny("llama", tiny_dir / "rel-father", seed=0)
    return father, perturbed_copy(father, tiny_dir / "rel-mother", scale=0.5, seed=3)


def merge_args(pair, out: Path, *extra: str) -> list[str]:
    father, mother = pair
    return ["merge", "--father", str(father), "--mother", str(mother), "--out", str(out),
            "--shard-size", "50KB", *extra]


def paused_merge(pair, out: Path) -> subprocess.Popen:
    """`darwin merge` stopped inside its first write (the temporary folder exists)."""
    proc = subprocess.Popen([sys.executable, "-c", PAUSING_MERGE, *merge_args(pair, out)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    assert list(out.parent.glob(f".{out.name}.darwin-tmp-*"))
    return proc


def leftovers(out: Path) -> list[str]:
    return sorted(p.name for p in out.parent.glob(f".{out.name}.*"))


def same_weights(a: Path, b: Path) -> bool:
    with ModelSource(a) as x, ModelSource(b) as y:
        return x.names == y.names and all(torch.equal(x.get(n), y.get(n)) for n in x.names)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_sigint_during_merge_exits_130_with_one_line_and_leaves_nothing(pair, tmp_path, signum):
    out = tmp_path / "child"
    proc = paused_merge(pair, out)
    proc.send_signal(signum)
    _, err = proc.communicate()
    assert proc.returncode == 130
    assert darwin_line(err) == "darwin: interrupted"
    assert not out.exists() and leftovers(out) == []


def test_sigkill_during_merge_leaves_no_folder_and_the_next_run_starts_clean(pair, tmp_path,
                                                                              capsys):
    out = tmp_path / "child"
    proc = paused_merge(pair, out)
    proc.kill()
    proc.wait()
    assert not out.exists()
    stale = leftovers(out)  # the killed writer's lock file and temporary folder
    assert any(name.endswith(".darwin-lock") for name in stale)
    assert any(".darwin-tmp-" in name for name in stale)
    assert main(merge_args(pair, out)) == 0, capsys.readouterr().err
    assert leftovers(out) == []  # the dead writer's lock taken over, its folder removed
    assert same_weights(out, merge_models(*pair, tmp_path / "fresh", progress=False))


def test_two_merges_into_one_folder_one_wins_and_the_folder_is_never_mixed(pair, tmp_path,
                                                                            capsys):
    out = tmp_path / "child"
    genome = tmp_path / "g.yaml"
    genome.write_text(Genome.uniform(0.9).to_yaml())  # the second merge's child differs
    first = paused_merge(pair, out)
    try:
        assert main(merge_args(pair, out, "--genome", str(genome))) == OutputError.exit_code
        line = darwin_line(capsys.readouterr().err)
        assert f"another Darwin process (PID {first.pid}) is writing it" in line
    finally:
        first.communicate("go\n")
    assert first.returncode == 0
    assert leftovers(out) == []
    assert same_weights(out, merge_models(*pair, tmp_path / "alone", progress=False))
    # a second writer that arrives after the first finished is refused, not mixed in
    assert main(merge_args(pair, out, "--genome", str(genome))) == OutputError.exit_code
    assert "already exists" in capsys.readouterr().err
    assert same_weights(out, tmp_path / "alone")


# -- memory and numerical faults ----------------------------------------------------
def test_available_memory_reads_the_machine():
    free = resources.available_memory(torch.device("cpu"))
    total = next(int(line.split()[1]) * 1024 for line in
                 Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))
    assert free is not None and 0 < free <= total


def test_parents_too_big_for_memory_are_refused_before_any_read(pair, monkeypatch):
    father, mother = pair
    with ModelSource(father) as source:
        float32 = source.total_bytes  # the tiny model is all float32
    needed = 3 * float32  # father + mother + one child
    monkeypatch.setattr(resources, "available_memory", lambda device: needed - 1)
    with monkeypatch.context() as m:
        m.setattr(ModelSource, "get", lambda *a: pytest.fail("a tensor was read"))
        with pytest.raises(ResourceError) as caught:
            ParentTensors.load(father, mother)
    assert f"{needed / 1e6:.1f} MB of cpu memory" in str(caught.value)
    assert f"only {(needed - 1) / 1e6:.1f} MB available" in str(caught.value)
    # the same parents in bfloat16 need half as much, and fit
    parents = ParentTensors.load(father, mother, dtype="bfloat16")
    assert next(iter(parents.father.values())).dtype == torch.bfloat16


def copy_with(source: Path, folder: Path, name: str, edit) -> Path:
    """A copy of a model folder with one tensor changed by `edit`."""
    folder.mkdir()
    for f in source.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    state = load_file(folder / "model.safetensors")
    state[name] = edit(state[name].clone())
    save_file(state, folder / "model.safetensors", {"format": "pt"})
    return folder


TENSOR = "model.layers.1.mlp.up_proj.weight"


def with_value(value: float):
    def edit(t: torch.Tensor) -> torch.Tensor:
        t.view(-1)[5] = value
        return t
    return edit


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_cli_names_a_non_finite_parent_tensor_in_one_line(pair, tmp_path, capsys, value):
    father, _ = pair
    broken = copy_with(father, tmp_path / "broken", TENSOR, with_value(value))
    out = tmp_path / "child"
    args = ["merge", "--father", str(broken), "--mother", str(pair[1]), "--out", str(out)]
    assert main(args) == NumericalError.exit_code
    line = darwin_line(capsys.readouterr().err)
    assert f"tensor '{TENSOR}' of the father contains NaN or Inf" in line
    assert not out.exists() and leftovers(out) == []


def test_a_merge_that_overflows_the_child_dtype_is_refused_not_written(pair, tmp_path, capsys):
    father, mother = pair  # 1e6 is finite in float32 and +inf in float16
    big = [copy_with(p, tmp_path / f"big-{i}", TENSOR, lambda t: t * 0 + 1e6)
           for i, p in enumerate(pair)]
    out = tmp_path / "child"
    args = ["merge", "--father", str(big[0]), "--mother", str(big[1]), "--out", str(out),
            "--dtype", "float16"]
    assert main(args) == NumericalError.exit_code
    line = darwin_line(capsys.readouterr().err)
    assert f"merged tensor '{TENSOR}' is not finite in torch.float16" in line
    assert not out.exists() and leftovers(out) == []


# -- exit codes ---------------------------------------------------------------------
def _usage(pair, tmp_path):
    genome = tmp_path / "g.yaml"
    genome.write_text("attn_ratio: 7\n")
    return merge_args(pair, tmp_path / "c", "--genome", str(genome)), "attn_ratio = 7"


def _format(pair, tmp_path):
    return ["inspect", str(tmp_path / "nope")], "no such model folder"


def _incompatible(pair, tmp_path):
    deeper = make_tiny("llama", tmp_path / "deeper", n_layers=6)
    return ["merge", "--father", str(pair[0]), "--mother", str(deeper), "--out",
            str(tmp_path / "c")], "only in the mother"


def _numerical(pair, tmp_path):
    broken = copy_with(pair[1], tmp_path / "nan", TENSOR, with_value(float("nan")))
    return ["merge", "--father", str(pair[0]), "--mother", str(broken), "--out",
            str(tmp_path / "c")], "contains NaN or Inf"


def _output(pair, tmp_path):
    (tmp_path / "c").mkdir()
    return merge_args(pair, tmp_path / "c"), "already exists"


def _storage(pair, tmp_path):
    father, mother = pair
    return ["evolve", "--father", str(father), "--mother", str(mother), "--fitness",
            "arc_easy=1", "--out", str(tmp_path / "run"), "--trials", "2", "--search-only",
            "--storage", "postgresql://nobody@127.0.0.1:9/none"], "cannot open study storage"


def _resource(pair, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda _: usage(10**6, 10**6, 1000))
    return merge_args(pair, tmp_path / "c"), "not enough disk space"


@pytest.mark.parametrize("error, case", [
    (UsageError, _usage), (ModelFormatError, _format), (IncompatibleModelsError, _incompatible),
    (NumericalError, _numerical), (OutputError, _output), (StorageError, _storage),
    (ResourceError, _resource)], ids=lambda x: getattr(x, "__name__", ""))
def test_each_class_of_user_error_has_its_exit_code_and_one_line(pair, tmp_path, capsys,
                                                                  monkeypatch, error, case):
    args, message = (case(pair, tmp_path, monkeypatch) if case is _resource
                     else case(pair, tmp_path))
    capsys.readouterr()
    assert main(args) == error.exit_code
    line = darwin_line(capsys.readouterr().err)
    assert line.startswith("darwin: error:") and message in line
    assert not (tmp_path / "c").exists() or error is OutputError


def test_evolve_refuses_a_bad_probe_folder_before_any_work(pair, tmp_path, capsys):
    """`darwin evolve --probes`: a missing folder or a probe line without text is one line,
    exit 2, and no run folder."""
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mine.jsonl").write_text('{"prompt": "no text key"}\n', encoding="utf-8")
    run = tmp_path / "run"
    for probes, message in ((tmp_path / "none", "no such probe folder"),
                            (bad, 'mine.jsonl:1: expected {"text"')):
        args = ["evolve", "--father", str(pair[0]), "--mother", str(pair[1]), "--fitness",
                "arc_easy=1", "--out", str(run), "--trials", "2", "--probes", str(probes)]
        capsys.readouterr()
        assert main(args) == UsageError.exit_code
        assert message in darwin_line(capsys.readouterr().err)
        assert not run.exists()


def test_exit_codes_are_distinct_and_documented():
    from darwin_merge.errors import DarwinError

    codes = {e.__name__: e.exit_code for e in DarwinError.__subclasses__()}
    assert {UsageError, ModelFormatError, IncompatibleModelsError, NumericalError, OutputError,
            StorageError, ResourceError} <= set(DarwinError.__subclasses__())
    assert len(set(codes.values())) == len(codes) and 0 not in codes.values()
    table = (Path(__file__).parents[1] / "docs" / "RELIABILITY.md").read_text()
    for name, code in codes.items():
        assert f"| {code} | `{name}`" in table


def test_reliability_table_names_only_tests_that_exist():
    import re

    tests = Path(__file__).parent
    table = (tests.parent / "docs" / "RELIABILITY.md").read_text()
    named = set(re.findall(r"`(test_\w+\.py)::(test_\w+)`", table))
    assert len(named) > 30
    missing = [f"{file}::{name}" for file, name in sorted(named)
               if f"def {name}(" not in (tests / file).read_text()]
    assert missing == []


def test_debug_shows_the_traceback(tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "darwin_merge.cli", *args],
                              capture_output=True, text=True)

    plain = run("inspect", str(tmp_path / "nope"))
    debug = run("--debug", "inspect", str(tmp_path / "nope"))
    assert plain.returncode == ModelFormatError.exit_code and "Traceback" not in plain.stderr
    assert debug.returncode != 0 and "Traceback" in debug.stderr
    assert "ModelFormatError" in debug.stderr and "no such model folder" in debug.stderr



def test_file_size_limit_mid_write_is_a_disk_error_and_removes_the_partial_child(pair,
                                                                                 tmp_path):
    """A real short write: the kernel refuses bytes past RLIMIT_FSIZE (EFBIG), like a full disk."""
    import resource

    with ModelSource(pair[0]) as source:
        limit = source.total_bytes // 2  # the child needs the whole model

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "child"
    proc = subprocess.run([sys.executable, "-m", "darwin_merge.cli", *merge_args(pair, out)[:-2]],
                          capture_output=True, text=True, preexec_fn=small_files)
    assert proc.returncode == OutputError.exit_code, proc.stderr
    line = darwin_line(proc.stderr)
    assert "not enough disk space" in line and "partial output removed" in line
    assert not out.exists() and leftovers(out) == []


def test_an_overwrite_killed_between_its_renames_loses_nothing(tmp_path):
    """The old child moved aside by a killed --overwrite run comes back on the next run."""
    from darwin_merge.io import atomic_output_dir

    out = tmp_path / "child"
    aside = tmp_path / ".child.darwin-old-99999999"  # a PID that no longer runs
    aside.mkdir()
    (aside / "model.safetensors").write_text("the previous child")
    (tmp_path / ".child.darwin-lock").write_text("99999999")
    with pytest.raises(OutputError, match="already exists"), atomic_output_dir(out):
        pass
    assert (out / "model.safetensors").read_text() == "the previous child"
    assert leftovers(out) == []
    with atomic_output_dir(out, overwrite=True) as tmp:
        (tmp / "model.safetensors").write_text("the new child")
    assert (out / "model.safetensors").read_text() == "the new child" and leftovers(out) == []


def untrusted_copy(source: Path, folder: Path, case: str, marker: Path) -> Path:
    """A copy of a parent made untrusted: a pickle checkpoint, or a config asking for code."""
    folder.mkdir()
    for f in source.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    state = load_file(source / "model.safetensors")
    if case == "pickle":
        torch.save(state, folder / "pytorch_model.bin")
        return folder
    save_file(state, folder / "model.safetensors", {"format": "pt"})
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.Evil"}
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "modeling_evil.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    return folder


@pytest.mark.parametrize("case, flag", [("pickle", "--allow-pickle"),
                                        ("remote_code", "--trust-remote-code")])
def test_untrusted_parent_refused_by_the_cli_unless_opted_in_and_no_code_runs(
        pair, tmp_path, capsys, case, flag):
    marker = tmp_path / "code-ran"
    mother = untrusted_copy(pair[1], tmp_path / "mother", case, marker)
    args = ["merge", "--father", str(pair[0]), "--mother", str(mother)]
    assert main([*args, "--out", str(tmp_path / "refused")]) == ModelFormatError.exit_code
    assert flag in darwin_line(capsys.readouterr().err)  # the message names the opt-in
    assert not (tmp_path / "refused").exists() and leftovers(tmp_path / "refused") == []
    assert main([*args, "--out", str(tmp_path / "child"), flag]) == 0
    assert same_weights(tmp_path / "child", merge_models(*pair, tmp_path / "ref",
                                                         progress=False))
    assert not marker.exists()  # the code was never imported
    assert not list((tmp_path / "child").glob("*.py"))  # nor copied into the child
