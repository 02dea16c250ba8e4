"""The CLI: one-line errors with exit codes, JSON output, comparisons."""

from __future__ import annotations

import json
import subprocess
import sys

from darwin_merge.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "darwin_merge.cli", *args],
                          capture_output=True, text=True)


def test_inspect_json(tiny_llama, capsys):
    assert main(["inspect", str(tiny_llama), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["family"] == "llama" and report["num_layers"] == 4


def test_inspect_two_models_reports_differences(tiny_dir, capsys):
    from tiny_models import build_model, save_model

    a = save_model(build_model("llama", n_layers=4), tiny_dir / "cmp-a")
    b = save_model(build_model("llama", n_layers=6), tiny_dir / "cmp-b")
    assert main(["inspect", str(a), str(b), "--json"]) == 0
    diff = json.loads(capsys.readouterr().out)["comparison"]
    assert not diff["mergeable"] and "model.layers.5.mlp.up_proj.weight" in diff["only_in_b"]
    # three models (N parents): each compared with the first
    c = save_model(build_model("llama", n_layers=4, seed=5), tiny_dir / "cmp-c")
    assert main(["inspect", str(a), str(b), str(c), "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)["compared"]
    assert [x["comparison"]["mergeable"] for x in compared] == [False, True]
    assert compared[1]["model"]["num_layers"] == 4


def test_missing_model_is_one_line_error(tmp_path):
    proc = run("inspect", str(tmp_path / "nope"))
    assert proc.returncode == 3
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no such model folder" in proc.stderr


def test_bad_gguf_is_one_line_error(tmp_path):
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGML nonsense")
    proc = run("import-gguf", str(bad), str(tmp_path / "out"))
    assert proc.returncode == 3 and "not a GGUF file" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_unknown_option_is_usage_error():
    proc = run("inspect", "--no-such-flag")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def _commands(group, path=()):
    """(path, command) for every leaf command of the click tree typer builds."""
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _click_tree():
    import typer.main

    from darwin_merge.cli import app

    return typer.main.get_command(app)


def test_bare_darwin_prints_help_and_exits_zero():
    for args in ((), ("demo",)):
        proc = run(*args)
        assert proc.returncode == 0 and "Usage: darwin" in proc.stdout
        assert "error" not in proc.stderr


def test_version_and_debug_are_listed_options():
    from darwin_merge import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == __version__
    help_text = run("--help").stdout
    assert "--debug" in help_text and "--version" in help_text


def test_help_lists_commands_in_workflow_order():
    help_text = run("--help").stdout
    workflow = ("inspect", "scan", "evolve", "merge", "health", "eval", "card", "plan")
    positions = [help_text.index(f" {name} ") for name in workflow]
    assert positions == sorted(positions)


def test_shared_options_have_one_help_text():
    shared = ("--father", "--mother", "--base", "--device", "--probes", "--max-tokens",
              "--max-prompts", "--overwrite", "--cache", "--genome", "--scan",
              "--transplant-low", "--transplant-high", "--disjoint-mean", "--compute-dtype")
    helps: dict[str, set[str]] = {}
    for path, command in _commands(_click_tree()):
        for param in command.params:
            name = param.opts[0]
            if name in shared or (name == "--dtype" and path != ("merge",)):  # the child's
                helps.setdefault(name, set()).add(param.help)
    assert set(helps) >= set(shared)
    assert {name: texts for name, texts in helps.items() if len(texts) > 1} == {}


def test_evolve_shows_the_recipe_defaults():
    from darwin_merge.evolve.recipe import Recipe

    evolve = dict(_commands(_click_tree()))[("evolve",)]
    shown = {p.name: p.default for p in evolve.params if p.name in Recipe.model_fields}
    fields = {name: Recipe.model_fields[name] for name in shown}
    expected = {name: f.default for name, f in fields.items()
                if not f.is_required() and f.default_factory is None and f.default is not None}
    assert expected and len(expected) >= 8
    assert {name: shown[name] for name in expected} == expected


def test_evolve_recipe_beats_defaults_and_typed_options_beat_the_recipe(tmp_path, monkeypatch):
    import darwin_merge.evolve.run as evolve_run

    seen = {}
    monkeypatch.setattr(evolve_run, "run_evolve",
                        lambda recipe, finish_run: seen.setdefault("recipe", recipe))
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(f"father: {tmp_path}\nmother: {tmp_path}\nout: {tmp_path / 'run'}\n"
                           "fitness: copa=1\ntrials: 5\nseed: 1\ndevice: cpu\n")
    assert main(["evolve", "--recipe", str(recipe_file), "--seed", "3", "--search-only"]) == 0
    assert seen["recipe"].trials == 5 and seen["recipe"].seed == 3
    assert seen["recipe"].popsize == 6  # neither: the Recipe's default


def test_importing_the_library_sets_no_global_state():
    code = """
import logging, pkgutil, importlib
import matplotlib, optuna, torch, transformers
def levels():
    loggers = logging.Logger.manager.loggerDict.items()
    return {n: l.level for n, l in loggers if isinstance(l, logging.Logger)}
before, backend = levels(), dict.__getitem__(matplotlib.rcParams, "backend")
import darwin_merge
for m in pkgutil.walk_packages(darwin_merge.__path__, "darwin_merge."):
    importlib.import_module(m.name)
after = levels()
assert {n: after[n] for n in before if after[n] != before[n]} == {}, after
assert dict.__getitem__(matplotlib.rcParams, "backend") == backend
print("clean")
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == "clean", proc.stderr


def test_demo_pair_choices_are_one_line_errors(tmp_path):
    for args, message in ((("--family", "tiny", "--pair", "father-mother"),
                           "the father-mother pair exists for the smollm2 and gemma3 families "
                           "only"),
                          (("--pair", "strangers"), "unknown demo pair 'strangers'")):
        proc = run("demo", "run", *args, "--cache", str(tmp_path), "--out", str(tmp_path / "r"))
        assert proc.returncode == 2 and message in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr and not (tmp_path / "r").exists()
