"""`make demo FAMILY=tiny`: the tiny preset end to end through the demo's own code path
(run_demo, then `darwin demo run` re-printing the finished run), with a small budget."""

from __future__ import annotations

import contextlib
import io
import json

import pytest
import yaml

from darwin_merge.cli import main
from darwin_merge.eval.report import evaluate_path
from darwin_merge.eval.tasks import file_task, select_items
from darwin_merge.evolve.baselines import FIXED_GENOMES
from darwin_merge.evolve.scoring import fitness_of, read_scores
from darwin_merge.merge.engine import merge_models
from darwin_merge.mergekit import merge_from_config
from darwin_merge.mergekit.standard import StandardRecipe
from darwin_merge.records import file_names, record_json
from darwin_recipes.demo.run import TINY_PRESET, run_demo
from darwin_recipes.demo.tiny import task_paths, tiny_folder

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
# the trio has a base; the fixed baselines (the tuned ones' names depend on the run)
MODELS = {"child", "father", "mother", "base", "dare_ties_0.5", "linear_0.5",
          "task_arithmetic_l1"}


def models_of(summary: dict) -> set[str]:
    """The holdout table's models: MODELS and each tuned recipe's best (healthy) point."""
    search = summary["baseline_search"]
    tuned = set(search["chosen"].values()) | {n for n in search["healthy"].values() if n}
    return MODELS | tuned


@pytest.fixture(scope="module")
def tiny_demo(two_skill_pair, tmp_path_factory):
    """The demo on the session's trio: its cache already holds the trained parents."""
    cache = two_skill_pair[0].parents[2]
    assert tiny_folder(cache) == two_skill_pair[0].parent
    run = tmp_path_factory.mktemp("tiny-demo") / "run"
    with contextlib.redirect_stderr(io.StringIO()) as log:
        summary = record_json(run_demo(  # summary.json's content
            "tiny", cache=cache, out=run, trials=4, limit=24, holdout_limit=30,
            phase1_steps=20, top_k=2, popsize=2, probe_max_prompts=2, probe_max_tokens=16,
            scan_items=8))
    return cache, run, summary, log.getvalue()


def test_the_demo_writes_its_parents_tasks_table_and_report(tiny_demo):
    cache, run, summary, _ = tiny_demo
    folder = tiny_folder(cache)
    assert json.loads((folder / file_names.TINY_RECORD).read_text())["version"] == "v2"
    tasks = {stem: str(path) for stem, path in task_paths(folder).items()}
    for path in tasks.values():  # real task files: both splits, the evaluator's own kind
        task = file_task(path)
        assert task.kind == "greedy_continuation"
        assert {item.split for item in select_items(task)} == {"search", "holdout"}
    holdout = summary["holdout"]
    assert set(holdout["models"]) == models_of(summary)
    roles = {task: spec["role"] for task, spec in holdout["tasks"].items()}
    assert roles == {tasks["shift"]: "fitness", tasks["mirror"]: "fitness",
                     tasks["copy"]: "extra"}
    assert set(TINY_PRESET["fitness"]) | set(TINY_PRESET["extra_tasks"]) == set(tasks)
    # each parent has its own skill and lacks the other's
    father, mother = holdout["models"]["father"], holdout["models"]["mother"]
    assert father[tasks["shift"]]["acc"] > 0.9 > mother[tasks["shift"]]["acc"]
    assert mother[tasks["mirror"]]["acc"] > 0.9 > father[tasks["mirror"]]["acc"]
    assert all(row[tasks["shift"]]["n"] == 30 for row in holdout["models"].values())
    results = (run / "RESULTS.md").read_text()
    # the command that remakes the run: the budget's flags, then what only Python changed
    assert ('Command: `make demo FAMILY=tiny DEMO_ARGS="--trials 4 --limit 24 --holdout-limit '
            '30"` with changes from Python (phase1_steps=20, top_k=2, popsize=2, '
            'probe_max_prompts=2, probe_max_tokens=16, scan_items=8)') in results
    assert "| model | shift (fitness, acc, n=30) | mirror (fitness, acc, n=30) |" in results
    assert all(f"| {name} |" in results for name in models_of(summary))
    assert "### Baselines" in results and "The best tuned baseline is " in results
    assert summary["best"]["genome_hash"] in (run / "child" / "README.md").read_text()
    assert (run / "report.html").stat().st_size > 10_000
    assert len([t for t in json.loads((run / "trials.json").read_text())
                if t["phase"] == 2]) == 4
    # where the child came from: 4 trials are the proxy's top 2 and the first 2 anchors
    assert ("Phase 2's candidates: 2 proxy top-k seeds, 2 anchors; CMA-ES ran 0 generations"
            in results)
    best = summary["best"]
    proposer = {"proxy_top_k": "Phase 1's proxy (top-k)", "anchor": "the anchor "
                + str(best.get("anchor"))}[best["source"]]
    assert f"The child was found by {proposer} (trial {best['trial']}," in results


def test_the_search_split_has_the_child_beside_every_model_on_the_items_it_was_chosen_on(
        tiny_demo, tmp_path):
    """summary.json's `search_split`: the child's is its trial's fitness; a baseline's is
    what the baseline's merge written to disk scores on the same search items."""
    cache, run, summary, _ = tiny_demo
    search = summary["search_split"]
    assert set(search) == models_of(summary)
    assert search["child"] == pytest.approx(summary["best"]["search_fitness"])
    folder = tiny_folder(cache)
    linear = merge_models(folder / "father", folder / "mother", tmp_path / "linear",
                          base=folder / "base", genome=FIXED_GENOMES["linear_0.5"], progress=False)
    scores = evaluate_path(linear, list(summary["fitness"]), split="search", limit=24,
                           progress=False)["results"]
    assert search["linear_0.5"] == pytest.approx(
        fitness_of(read_scores(scores), summary["fitness"]), abs=1e-6)
    for name in ("child", "linear_0.5"):
        row = next(line for line in holdout_table(run / "RESULTS.md") if line.startswith(
            f"| {name} |"))
        assert row.endswith(f"| {search[name]:.4f} |")


def test_a_tuned_baseline_is_what_its_mergekit_yaml_makes_on_the_same_items(tiny_demo, tmp_path):
    """The tuned task arithmetic's chosen point, run as the mergekit YAML a user would write
    (`darwin merge --mergekit-config`, to disk), scores on the search items what the tuning
    recorded for it: the baseline is the recipe people use, not a look-alike."""
    cache, run, summary, _ = tiny_demo
    name = summary["baseline_search"]["chosen"]["task_arithmetic"]
    point = StandardRecipe(**summary["baseline_search"]["recipes"][name])
    folder = tiny_folder(cache)
    config = tmp_path / "task_arithmetic.yml"
    config.write_text(yaml.safe_dump(point.mergekit_dict(
        str(folder / "father"), str(folder / "mother"), base=str(folder / "base"))))
    child = merge_from_config(config, tmp_path / "child", progress=False)
    scores = evaluate_path(child, list(summary["fitness"]), split="search", limit=24,
                           progress=False)["results"]
    assert summary["search_split"][name] == pytest.approx(
        fitness_of(read_scores(scores), summary["fitness"]), abs=1e-6)


def test_a_finished_run_of_other_tasks_is_refused_not_reprinted_as_the_pair(tiny_demo, capsys):
    """A run folder made by another pair (`make demo`'s pair changed, its folder name did
    not) is a one-line error, not the other pair's results under this pair's name."""
    cache, run, _, _ = tiny_demo
    assert main(["demo", "run", "--family", "smollm2", "--cache", str(cache),
                 "--out", str(run)]) == 2
    err = capsys.readouterr().err
    assert "holds a finished run on other fitness tasks" in err and "specialists" in err
    assert "Traceback" not in err and "already complete" not in err


def test_a_second_run_reprints_the_finished_table(tiny_demo, capsys, monkeypatch):
    from darwin_merge import cli

    monkeypatch.setattr(cli.out, "width", 250)  # a table row on one line
    cache, run, summary, _ = tiny_demo
    assert main(["demo", "run", "--family", "tiny", "--cache", str(cache),
                 "--out", str(run)]) == 0
    printed = capsys.readouterr()
    assert "already complete" in printed.err
    assert "Held-out items" in printed.out and " shift (fitness" in printed.out
    # the terminal, RESULTS.md and the card show one holdout table (report_tables.py)
    results, card = holdout_table(run / "RESULTS.md"), holdout_table(run / "child" / "README.md")
    assert results == card and len(results) == 2 + len(models_of(summary))
    for line in results[2:]:
        name, *cells = [c.strip() for c in line.strip("|").split(" | ")]
        printed_row = next(row for row in printed.out.splitlines() if f"│ {name} " in row)
        assert all(cell in printed_row for cell in cells), (cells, printed_row)
    assert json.loads((run / "summary.json").read_text()) == summary


def holdout_table(markdown_file) -> list[str]:
    """The lines of the first Markdown table after "Held-out items" in a file."""
    text = markdown_file.read_text().split("Held-out items", 1)[1]
    lines = text.split("\n\n", 2)[1].splitlines()
    return [line for line in lines if line.startswith("|")]


def test_phase2_shows_one_bar_over_the_whole_budget(tiny_demo):
    *_, log = tiny_demo
    bar = [line for line in log.splitlines() if line.startswith("Phase 2 candidates")]
    assert len(bar) == 1 and "4/4" in bar[0] and "eta" in bar[0], bar
