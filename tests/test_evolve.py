"""The search: bad input, determinism, resume after SIGKILL, two workers on one study.

These use tiny random models with a few items per task, so they test the machinery
(study, sampler, duplicate guard, resume), not the quality of the child; the quality
test on the two-skill pair lives in test_evolve_skills.py.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from darwin_merge.cli import main
from darwin_merge.errors import SearchError, StorageError, UsageError
from darwin_merge.evolve import phase2
from darwin_merge.evolve.recipe import build_recipe, parse_fitness
from darwin_merge.evolve.run import run_evolve
from darwin_merge.evolve.study import phase2_summary, ranked_trials, was_stopped
from darwin_merge.genome import Genome
from darwin_merge.records import record_json
from darwin_merge.resources import cpu_has_fast_bfloat16
from darwin_merge.scan import run_scan
from tiny_models import make_tiny, perturbed_copy

FITNESS = {"arc_easy": 0.5, "simple_arithmetic": 0.5}


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(father, mother, scan.json) of a tiny llama pair, scanned once."""
    root = tmp_path_factory.mktemp("evolve")
    father = make_tiny("llama", root / "father", seed=0)
    mother = perturbed_copy(father, root / "mother", scale=0.3, seed=5)
    run_scan(father, mother, root / "scan", max_tokens=16, max_prompts=2, progress=False)
    return father, mother, root / "scan" / "scan.json"


def recipe(pair, out: Path, **kw):
    father, mother, scan = pair
    values = dict(father=father, mother=mother, fitness=FITNESS, out=out, scan=scan, trials=4,
                  limit=3, phase1_steps=10, top_k=2, popsize=4, baselines="none")
    values.update(kw)
    return build_recipe(**values)


def genome_sequence(db: Path) -> list[tuple]:
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{db}")
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    return [tuple(sorted(t.params.items())) for t in trials]


def darwin(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "darwin_merge.cli", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def cli_args(pair, out: Path, trials: int, extra=()) -> list[str]:
    father, mother, scan = pair
    return ["evolve", "--father", str(father), "--mother", str(mother), "--fitness",
            "arc_easy=0.5,simple_arithmetic=0.5", "--out", str(out), "--scan", str(scan),
            "--trials", str(trials), "--limit", "3", "--phase1-steps", "10", "--top-k", "2",
            "--search-only", *extra]


def test_parse_fitness():
    assert parse_fitness("a=1, b=3") == {"a": 1.0, "b": 3.0}
    with pytest.raises(UsageError):
        parse_fitness("a=x")
    with pytest.raises(UsageError):
        parse_fitness(" , ")


@pytest.mark.parametrize("kw,match", [
    ({"fitness": {"arc_easy": 0.0}}, "positive"),
    ({"fitness": {"arc_easy": -1.0, "piqa": 2.0}}, "positive"),
    ({"trials": 0}, "at least 1"),
    ({"limit": 0}, "at least 1"),
])
def test_bad_recipe_values(pair, tmp_path, kw, match):
    with pytest.raises(UsageError, match=match):
        recipe(pair, tmp_path / "run", **kw)


def test_unknown_task_is_one_line_error(pair, tmp_path):
    proc = darwin(*[a if a != "arc_easy=0.5,simple_arithmetic=0.5" else "nope=1"
                    for a in cli_args(pair, tmp_path / "run", 2)])
    _, err = proc.communicate()
    assert proc.returncode == 2 and "unknown task 'nope'" in err and "Traceback" not in err
    assert not (tmp_path / "run" / "study.db").exists()


def test_unreachable_storage_is_one_line_error(pair, tmp_path):
    proc = darwin(*cli_args(pair, tmp_path / "run", 2,
                            ["--storage", "postgresql://nobody@127.0.0.1:9/none"]))
    _, err = proc.communicate()
    assert proc.returncode == StorageError.exit_code, err
    assert "cannot open study storage" in err and "Traceback" not in err


def test_the_scan_and_the_search_read_search_items_only(pair, tmp_path, monkeypatch):
    """Every task item the scan's attribution, Phase 1 (the parents' scores) and Phase 2
    (racing, full scores) read is from the `search` split: a spy on `select_items`,
    wherever darwin imported it, sees no other split. (Fails if any of them asks for the
    holdout or for all items.)"""
    import darwin_merge.eval.evaluator
    import darwin_merge.evolve.racing
    import darwin_merge.scan.attribution  # noqa: F401 (imported before the spy is set)
    from darwin_merge.eval import tasks as task_module

    original, reads = task_module.select_items, []

    def spy(task, split="all", limit=None):
        reads.append((task.name, split))
        return original(task, split, limit)

    for module in list(sys.modules.values()):
        if getattr(module, "__name__", "").startswith("darwin_merge") and \
                getattr(module, "select_items", None) is original:
            monkeypatch.setattr(module, "select_items", spy)
    run_evolve(recipe(pair, tmp_path / "run", scan=None, trials=6, scan_items=4),
               finish_run=False)
    assert {name for name, _ in reads} >= set(FITNESS)
    assert {split for _, split in reads} == {"search"}


def test_the_finish_keeps_a_warning_child_only_when_allowed(pair, tmp_path, monkeypatch):
    """The best genome's child gets a warning (interference only), every later one is
    healthy: the finish passes over the first child and keeps the next, naming the first
    among the rejected; with --allow-warning it keeps the first. An unhealthy child is
    passed over either way. (Fails if --allow-warning is not read, or read for an
    unhealthy child.)"""
    from darwin_merge.evolve import finish
    from darwin_merge.evolve.run import searched

    first_verdict = {}

    def health(recipe, child, **options):
        verdict = first_verdict.pop("verdict", "healthy")
        return {"verdict": verdict, "reasons": [] if verdict == "healthy" else [verdict],
                "flagged_layers": [], "probe_sets": {}}

    monkeypatch.setattr(finish, "child_health", health)
    strict = recipe(pair, tmp_path / "run", trials=6)
    lenient = strict.model_copy(update={"allow_warning": True})
    with searched(strict) as search:
        def pick(recipe, verdict):
            first_verdict["verdict"] = verdict
            return finish.pick_healthy(recipe, search.study, search.settings,
                                       search.scan_path)

        best, *_ = pick(lenient, "healthy")
        kept, _, _, _, passed_over = pick(strict, "warning")
        assert kept.number != best.number
        assert (best.number, "warning") in [(r.trial, r.verdict) for r in passed_over]
        assert pick(lenient, "warning")[0].number == best.number
        assert pick(lenient, "unhealthy")[0].number == kept.number


def test_when_the_best_children_lose_function_the_finish_keeps_a_seed_found_healthy(
        pair, tmp_path, monkeypatch):
    """The three best genomes' children are unhealthy; a lower one was found healthy
    before CMA-ES: the finish checks it last and keeps it, listing the three as passed
    over. With no such seed the run has no child (SearchError). (Fails without the last
    try, or if it takes a seed whose verdict was not healthy.)"""
    from darwin_merge.evolve import finish
    from darwin_merge.evolve.run import searched

    checked = []

    def health(recipe, child, **options):
        verdict = "unhealthy" if len(checked) < 3 else "healthy"
        checked.append(verdict)
        return {"verdict": verdict, "reasons": [] if verdict == "healthy" else ["loss"],
                "flagged_layers": [], "probe_sets": {}}

    monkeypatch.setattr(finish, "child_health", health)
    strict = recipe(pair, tmp_path / "run", trials=8)
    with searched(strict) as search:
        ranked = [t.number for t, _ in finish.ranked_genomes(search.study, strict)]
        seed = ranked[5]
        search.study.set_user_attr("seed_health", {str(ranked[4]): "unhealthy",
                                                   str(seed): "healthy"})
        kept, _, _, _, passed_over = finish.pick_healthy(strict, search.study,
                                                         search.settings, search.scan_path)
        assert kept.number == seed and checked == ["unhealthy"] * 3 + ["healthy"]
        # the three, and the seed left out before CMA-ES: every one ranked above the child
        assert sorted(r.trial for r in passed_over) == sorted(ranked[:3] + [ranked[4]])
        checked.clear()
        search.study.set_user_attr("seed_health", {str(seed): "unhealthy"})
        with pytest.raises(SearchError, match="no healthy child among the 3 genomes"):
            finish.pick_healthy(strict, search.study, search.settings, search.scan_path)


def test_a_resumed_search_starts_cma_es_where_it_started_without_new_checks(
        pair, tmp_path, monkeypatch):
    """The CMA-ES start is chosen once: a finished Phase 2 run again (a resumed run)
    checks no child's health and records the same start. (It used to health-check the
    best CMA-ES candidates as new seeds, and list them as rejected before CMA-ES.)"""
    from darwin_merge.evolve import phase2

    checks = []
    real = phase2.child_health
    monkeypatch.setattr(phase2, "child_health",
                        lambda *a, **k: checks.append(1) or real(*a, **k))
    strict = recipe(pair, tmp_path / "run", trials=16)
    run_evolve(strict, finish_run=False)
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    start, first_checks = study.user_attrs["cma_es_start"], len(checks)
    assert first_checks >= 1
    run_evolve(strict, finish_run=False)
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    assert len(checks) == first_checks and study.user_attrs["cma_es_start"] == start


def test_same_seed_same_genomes_and_study_guard(pair, tmp_path):
    # 16 candidates: 2 proxy seeds and 12 anchors, then 2 from CMA-ES (all must repeat)
    optuna.logging.set_verbosity(optuna.logging.INFO)
    run_evolve(recipe(pair, tmp_path / "a", trials=16), finish_run=False)
    assert optuna.logging.get_verbosity() == optuna.logging.INFO  # the caller's, restored
    run_evolve(recipe(pair, tmp_path / "b", trials=16), finish_run=False)
    seq_a = genome_sequence(tmp_path / "a" / "study.db")
    assert len(seq_a) == 16 and seq_a == genome_sequence(tmp_path / "b" / "study.db")
    assert (tmp_path / "a" / "evolution.png").read_bytes()[:4] == b"\x89PNG"
    # the same folder with another fitness is refused, and nothing recorded is lost
    with pytest.raises(StorageError, match="another search"):
        run_evolve(recipe(pair, tmp_path / "a", fitness={"arc_easy": 1.0}), finish_run=False)
    assert genome_sequence(tmp_path / "a" / "study.db") == seq_a
    # continuing with a larger budget keeps every scored candidate
    run_evolve(recipe(pair, tmp_path / "a", trials=18), finish_run=False)
    seq = genome_sequence(tmp_path / "a" / "study.db")
    assert seq[:16] == seq_a and len(seq) == 18


def test_phase2_scores_proxy_seeds_and_anchors_then_cma_from_the_best(pair, tmp_path,
                                                                       monkeypatch):
    from darwin_merge.evolve import phase2

    starts = []
    real_sampler = phase2.make_sampler
    monkeypatch.setattr(phase2, "make_sampler",
                        lambda r, start, step: starts.append(start) or real_sampler(r, start, step))
    run_evolve(recipe(pair, tmp_path / "run", trials=22), finish_run=False)
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    sources = [t.user_attrs["source"] for t in trials]
    assert sources == ["proxy_top_k"] * 2 + ["anchor"] * 12 + ["cma_es"] * 8
    line = trials[2:6]
    assert [t.params["global_ratio"] for t in line] == list(phase2.ANCHOR_RATIOS)
    assert all(t.params["block_3_ratio"] == t.params["global_ratio"] for t in line)
    anchors = phase2.anchor_genomes()
    assert [t.user_attrs["anchor"] for t in trials[2:14]] == list(anchors)
    for t in trials[2:14]:  # what each anchor's genome does: test_each_anchor_is_what_...
        assert Genome(**t.params) == anchors[t.user_attrs["anchor"]]
    # CMA-ES is centred on the best seed, not on the proxy's favourite
    best_seed = max(trials[:14], key=lambda t: t.value)
    assert starts == [pytest.approx(best_seed.params)]
    # summary.json's account of it: 8 CMA-ES candidates are 2 generations of 4
    story = phase2_summary(study, popsize=4, seconds=1.0)
    assert story.sources == {"proxy_top_k": 2, "anchor": 12, "cma_es": 8}
    assert story.cma_es_generations == 2
    assert story.best_seed.trial == best_seed.number
    assert story.best_seed.proposer() in ("Phase 1's proxy (top-k)",
                                          f"the anchor {best_seed.user_attrs.get('anchor')}")
    best_cma_es = max((t for t in trials[14:] if not was_stopped(t)), key=lambda t: t.value)
    assert story.cma_es_gain == pytest.approx(best_cma_es.value - best_seed.value)
    assert story.stopped_by_racing == sum(map(was_stopped, trials))
    assert 0 <= story.stopped_within_one_se <= story.stopped_by_racing


def test_an_unhealthy_best_is_left_out_of_racing_cma_es_and_the_child(pair, tmp_path,
                                                                       monkeypatch, capsys):
    """Every candidate that becomes the best so far is health-checked at once; the one whose
    child fails (here the first checked: the first candidate, which has no rival) is never
    racing's incumbent, CMA-ES starts from the best seed that passed, and the finish leaves
    it out without checking it again."""
    import darwin_merge.health as health
    from darwin_merge.evolve import phase2

    starts, checked = [], []
    real_sampler = phase2.make_sampler
    monkeypatch.setattr(phase2, "make_sampler",
                        lambda r, start, step: starts.append(start) or real_sampler(r, start, step))
    monkeypatch.setattr(health, "run_health", lambda child, *a, **k: checked.append(
        child) or {"verdict": "unhealthy" if len(checked) == 1 else "healthy",
                   "reasons": [], "flagged_layers": []})
    run = recipe(pair, tmp_path / "run", trials=16)
    run_evolve(run, finish_run=False)
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    verdicts = study.user_attrs["seed_health"]
    first = trials[0]
    assert verdicts[str(first.number)] == "unhealthy" and len(checked) == len(verdicts)
    assert list(verdicts.values()).count("unhealthy") == 1
    # each candidate that rose above the best kept so far was checked when it did
    kept = None
    for t in trials:
        full = "item_scores" in t.user_attrs and t.user_attrs.get("duplicate_of") is None
        if full and (kept is None or t.value > kept):
            assert str(t.number) in verdicts, t.number
            kept = t.value if verdicts[str(t.number)] == "healthy" else kept
    # racing never measured a candidate against the rejected child
    raced = [t.user_attrs["race"] for t in trials[1:]]
    assert raced and all(r["incumbent"] != first.number for r in raced)
    # CMA-ES starts from the best seed that passed
    seeds = [t for t in trials[:14] if t.number != first.number and "item_scores" in t.user_attrs]
    best_seed = max(seeds, key=lambda t: (t.value, -t.number))
    assert starts == [pytest.approx(best_seed.params)]
    assert phase2.best_kept_fitness(study, run) == kept
    # the finish leaves the rejected candidate out without checking it again
    summary = record_json(run_evolve(run))
    assert checked[-1] == run.out / "child" and first.number not in [
        int(n) for n, v in verdicts.items() if v == "healthy"]
    assert summary["best"]["trial"] != first.number
    assert summary["phase2"]["best_seed"]["trial"] == best_seed.number


def test_with_no_healthy_seed_cma_es_starts_from_the_best_and_the_summary_says_so(
        pair, tmp_path, monkeypatch):
    """None of the three best seeds' children passes the health check: CMA-ES starts from
    the best seed all the same, and summary.json's best seed is that seed (it was left
    empty, and RESULTS.md then dropped its whole account of the search)."""
    import darwin_merge.health as health
    from darwin_merge.evolve import phase2

    starts, checked = [], []
    real_sampler = phase2.make_sampler
    monkeypatch.setattr(phase2, "make_sampler",
                        lambda r, start, step: starts.append(start) or real_sampler(r, start, step))
    monkeypatch.setattr(health, "run_health", lambda child, *a, **k: checked.append(
        child) or {"verdict": "unhealthy" if len(checked) <= 3 else "healthy",
                   "reasons": [], "flagged_layers": []})
    run = recipe(pair, tmp_path / "run", trials=16)
    summary = record_json(run_evolve(run))
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    best_seed = ranked_trials(study.get_trials(states=(TrialState.COMPLETE,))[:14])[0]
    assert starts == [pytest.approx(best_seed.params)]
    assert summary["phase2"]["best_seed"]["trial"] == best_seed.number

# the components each anchor's field decides (arch/families.yaml's component names)
FIELD_COMPONENTS = {"attn": {"attn"}, "ffn": {"ffn", "moe"}, "embed": {"embed", "per_layer_embed"}}


def plan_by_component_and_block(pair, genome: Genome, tmp_path, capsys) -> dict:
    """`darwin plan --json` of a genome, as {(component, block): {(final_ratio, mode)}}."""
    father, mother, _ = pair
    path = tmp_path / "anchor.yaml"
    path.write_text(genome.to_yaml())
    assert main(["plan", "--father", str(father), "--mother", str(mother), "--genome",
                 str(path), "--json"]) == 0
    groups: dict = {}
    for row in json.loads(capsys.readouterr().out)["tensors"]:
        if row["mode"] != "exact":
            groups.setdefault((row["component"], row["block"]), set()).add(
                (row["final_ratio"], row["mode"]))
    return groups


def test_each_anchor_is_what_its_name_says_in_darwin_plan(pair, tmp_path, capsys):
    from darwin_merge.evolve.phase2 import anchor_genomes

    anchors = anchor_genomes()
    assert len(anchors) == 12
    for name, genome in anchors.items():
        groups = plan_by_component_and_block(pair, genome, tmp_path, capsys)
        assert {c for c, _ in groups} >= {"attn", "ffn", "embed", "norm"}, groups
        assert None in {b for _, b in groups} and len({b for _, b in groups}) >= 4, name
        if name.startswith("line_"):
            ratio = float(name.removeprefix("line_"))
            for cell in groups.values():  # merged (1-D tensors linearly), never transplanted
                assert {r for r, _ in cell} == {ratio}, (name, groups)
                assert {m for _, m in cell} <= {"dare_ties", "linear"}, (name, groups)
            continue
        if "_below_" in name:  # blocks 0-2 whole from one parent, 3-5 from the other
            below, _, above = name.removesuffix("_above").partition("_below_")
            for (comp, block), cell in groups.items():
                side = None if block is None else below if block < 3 else above
                want = ({(0.5, "linear"), (0.5, "dare_ties")} if side is None
                        else {(1.0 if side == "mother" else 0.0, f"transplant_{side}")})
                assert cell <= want and cell, (name, comp, block, cell)
            continue
        whole, _, rest = name.partition("_but_")
        component, _, swapped = rest.partition("_from_")
        for (comp, block), cell in groups.items():
            side = swapped if comp in FIELD_COMPONENTS[component] else whole
            want = {(1.0 if side == "mother" else 0.0, f"transplant_{side}")}
            assert cell == want, (name, comp, block, cell)


def test_anchors_give_way_to_a_small_budget(pair, tmp_path):
    run_evolve(recipe(pair, tmp_path / "run", trials=5), finish_run=False)
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    assert not study.get_trials(states=(TrialState.WAITING,))  # nothing left queued


def _completed(db: Path) -> list:
    if not db.exists():
        return []
    try:
        study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - the study may not exist yet
        return []
    return study.get_trials(states=(TrialState.COMPLETE,))


def test_resume_after_sigkill_keeps_every_scored_candidate(pair, tmp_path):
    out = tmp_path / "run"
    proc = darwin(*cli_args(pair, out, 8))
    before = []
    while proc.poll() is None and len(before) < 2:
        time.sleep(0.5)
        before = _completed(out / "study.db")
    assert proc.poll() is None, proc.communicate()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {t.number: (t.user_attrs["genome_hash"], t.value)
              for t in _completed(out / "study.db")}
    assert len(before) >= 2
    again = darwin(*cli_args(pair, out, 8))
    _, err = again.communicate()
    assert again.returncode == 0, err
    after = _completed(out / "study.db")
    kept = {t.number: (t.user_attrs["genome_hash"], t.value) for t in after}
    assert all(kept[n] == v for n, v in before.items())  # nothing scored is lost
    scored = [t.user_attrs["genome_hash"] for t in after if "duplicate_of" not in t.user_attrs]
    assert len(scored) == len(set(scored))  # no genome scored twice
    assert len([t for t in after if t.user_attrs.get("phase") == 2]) == 8


@pytest.mark.slow
def test_two_workers_share_one_postgres_study(pair, tmp_path):
    from pg_server import PostgresServer

    server = PostgresServer()
    url = server.start()
    try:
        args = ["--storage", url, "--study", "shared", "--popsize", "4"]
        workers = [darwin(*cli_args(pair, tmp_path / f"w{i}", 8, args)) for i in range(2)]
        for w in workers:
            _, err = w.communicate()
            assert w.returncode == 0, err
        study = optuna.load_study(study_name="shared", storage=url)
        done = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(done) >= 8
        workers_seen = {t.user_attrs["worker"] for t in done if "worker" in t.user_attrs}
        assert len(workers_seen) == 2, workers_seen  # both contributed
        scored = [t.user_attrs["genome_hash"] for t in done if "duplicate_of" not in t.user_attrs]
        assert len(scored) == len(set(scored))  # all distinct: none scored twice
    finally:
        server.stop()


def test_evolve_with_gsm8k_in_the_fitness_and_a_guard_runs_to_the_end(pair, tmp_path, capsys,
                                                                     monkeypatch):
    from darwin_merge.eval import tasks as task_registry

    shipped = task_registry.registry()  # gsm8k as shipped, but 8 new tokens (a tiny model
    short = dataclasses.replace(shipped["gsm8k"], max_new_tokens=8)  # never stops early)
    monkeypatch.setattr(task_registry, "registry", lambda: {**shipped, "gsm8k": short})
    father, mother, scan = pair
    out = tmp_path / "run"
    recipe_file = tmp_path / "recipe.yaml"
    recipe_file.write_text(yaml.safe_dump({
        "father": str(father), "mother": str(mother), "scan": str(scan), "out": str(out),
        "fitness": "gsm8k=0.5,copa=0.5", "guard": "lambada_openai=0.05", "trials": 3,
        "limit": 2, "holdout_limit": 3, "phase1_steps": 5, "top_k": 1, "popsize": 2,
        "probe_max_tokens": 8, "probe_max_prompts": 2, "baselines": "fixed",
        "guard_rule": "paired"}))
    assert main(["evolve", "--recipe", str(recipe_file)]) == 0
    printed = capsys.readouterr().out
    assert "Held-out items" in printed and "Guard lambada_openai" in printed
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 3
    for trial in trials:
        gsm8k = trial["scores"]["gsm8k"]
        assert gsm8k["metric"] == "exact_match" and gsm8k["n"] == 2
        assert gsm8k["exact_match"] in (0.0, 0.5, 1.0)
        assert set(trial["guard"]) == {"lambada_openai"}
        paired = trial["guard"]["lambada_openai"]  # on the same 2 items as the parents'
        assert paired["rule"] == "paired"
        assert paired["difference"] == pytest.approx(paired["child"] - paired["reference"])
    summary = json.loads((out / "summary.json").read_text())
    tasks = summary["holdout"]["tasks"]
    assert {t: (s["metric"], s["role"], s["n"]) for t, s in tasks.items()} == {
        "gsm8k": ("exact_match", "fitness", 3), "copa": ("acc", "fitness", 3),
        "lambada_openai": ("acc", "guard", 3)}
    comparisons = summary["holdout"]["comparisons"]
    assert set(comparisons) == {"father", "mother", "dare_ties_0.5", "linear_0.5",
                                "task_arithmetic_l1"}
    assert comparisons["father"]["gsm8k"]["test"] == "mcnemar_exact"
    assert comparisons["father"]["fitness"]["n"] == 6
    verdict = summary["guard"]["lambada_openai"]
    parents = [summary["holdout"]["models"][p]["lambada_openai"]["acc"]
               for p in ("father", "mother")]
    assert verdict["floor"] == pytest.approx(max(parents) - 0.05)
    assert verdict["within"] == (verdict["child"] >= verdict["floor"])
    logged = sorted((out / "holdout" / "samples_child").iterdir())  # per-item records
    assert [p.name.rsplit("_", 1)[0] for p in logged] == [
        "samples_copa", "samples_gsm8k", "samples_lambada_openai"]
    assert all(len(p.read_text().splitlines()) == 3 for p in logged)
    assert "logged_samples" not in summary["holdout"]["models"]["child"]["copa"]
    # the child's reported scores are its logged items': each item right exactly when its
    # logged answer is (COPA: the likeliest choice is the gold one; GSM8K: the extracted
    # answer is the gold one; LAMBADA: the gold continuation is the greedy one), each
    # task's score the mean of its items
    from darwin_merge.eval.metrics import gsm8k_gold

    def right(task: str, record: dict) -> float:
        answers = record["filtered_resps"]  # every leaf a string, as lm-eval writes them
        if task == "copa":
            likeliest = max(range(len(answers)), key=lambda j: float(answers[j][0]))
            return float(likeliest == int(record["target"]))
        if task == "gsm8k":
            return float(answers[0] == gsm8k_gold(record["target"]))
        return float(answers[0][1] == "True")

    child = summary["holdout"]["models"]["child"]
    for path, metric in zip(logged, ("acc", "exact_match", "acc"), strict=True):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        task = path.name.rsplit("_", 1)[0].removeprefix("samples_")
        assert [r[metric] for r in records] == [right(task, r) for r in records], task
        assert child[task][metric] == pytest.approx(sum(r[metric] for r in records) / 3)


def test_eval_dtype_bfloat16_scores_a_float32_merge_and_fitness_tasks_get_their_own_holdout_n(
        pair, tmp_path):
    import torch

    from darwin_merge.io import ModelSource
    from darwin_merge.merge.engine import ParentTensors, merge_state
    from darwin_merge.merge.plan import MergeSettings, load_scan_ratios

    father, mother, _ = pair
    out = tmp_path / "run"
    run = recipe(pair, out, scan=None, eval_dtype="bfloat16", trials=3, limit=2,
                 holdout_limit=2, fitness_holdout_limit=3, extra_tasks=["piqa"], phase1_steps=5,
                 top_k=1, popsize=2, probe_max_tokens=8, probe_max_prompts=2, scan_items=2)
    summary = record_json(run_evolve(run))
    scan = json.loads((out / "scan" / "scan.json").read_text())
    assert (scan["settings"]["dtype"], scan["settings"]["eval_dtype"]) == ("float32", "bfloat16")
    assert (summary["dtype"], summary["eval_dtype"]) == ("float32", "bfloat16")
    assert "| eval_dtype | bfloat16 |" in (out / "child" / "README.md").read_text()
    holdout = json.loads((out / "holdout" / "results_child.json").read_text())
    assert holdout["config"]["dtype"] == "bfloat16"
    n = {task: row["n"] for task, row in summary["holdout"]["tasks"].items()}
    assert n == {"arc_easy": 3, "simple_arithmetic": 3, "piqa": 2}
    assert summary["holdout"]["comparisons"]["father"]["fitness"]["n"] == 6
    # the child is the float32 merge of the best genome, not a bfloat16-rounded one
    parents = ParentTensors.load(father, mother, dtype="float32")
    genome = Genome(**yaml.safe_load((out / "best_genome.yaml").read_text()))
    expected = merge_state(parents, genome, load_scan_ratios(out / "scan" / "scan.json"),
                           MergeSettings())
    with ModelSource(out / "child") as child:
        assert all(child.get(n).dtype == torch.float32 for n in child.names)
        assert all(torch.equal(child.get(n), expected[n]) for n in child.names)
    # a continued search with the forward passes in float32 is another search
    with pytest.raises(StorageError, match="eval_dtype"):
        run_evolve(run.model_copy(update={"eval_dtype": None}), finish_run=False)


@pytest.mark.parametrize("flags, fast", [("fpu avx512f amx_bf16 amx_tile", True),
                                          ("fpu avx512f avx512_bf16", True),
                                          ("fpu avx2 avx512f avx512bw", False)])
def test_cpu_has_fast_bfloat16_reads_the_cpu_flags(tmp_path, flags, fast):
    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\nbugs\t\t: amx_bf16_typo\n")
    assert cpu_has_fast_bfloat16(info) is fast
    assert cpu_has_fast_bfloat16(tmp_path / "no-such-file") is None


def test_bfloat16_forward_passes_on_a_cpu_without_amx_get_one_warning(pair, tmp_path,
                                                                     monkeypatch, capsys):
    from darwin_merge.evolve import run as evolve_run

    monkeypatch.setattr(evolve_run, "cpu_has_fast_bfloat16", lambda: False)
    evolve_run.warn_slow_bfloat16(recipe(pair, tmp_path / "a", eval_dtype="bfloat16"))
    evolve_run.warn_slow_bfloat16(recipe(pair, tmp_path / "b"))  # float32: no warning
    printed = capsys.readouterr()
    assert (printed.out + printed.err).count("--eval-dtype float32 is faster") == 1


def test_an_unknown_eval_dtype_is_a_one_line_error(pair, tmp_path):
    with pytest.raises(UsageError, match="eval_dtype: .*must be one of float32, bfloat16"):
        recipe(pair, tmp_path / "run", eval_dtype="int8")


def test_a_v3_search_starts_from_the_tuned_baselines_and_searches_their_genes(pair, tmp_path):
    """Genome rule v3: the tuned baselines' chosen points are the first seeds (each the v3
    genome of its recipe), the proxy's top-k and the anchors follow read under v3, CMA-ES
    searches all 19 genes within their bounds (the scales in [0, 2]), and the child's
    records name rule v3."""
    from darwin_merge.evolve.baselines import choose
    from darwin_merge.genome import GENE_BOUNDS, V3_AS_V2, genes_of

    summary = run_evolve(recipe(pair, tmp_path / "run", trials=20, baselines="tuned",
                                holdout_limit=2, genome_rule="v3"))
    study = optuna.load_study(study_name="darwin", storage=f"sqlite:///{tmp_path}/run/study.db")
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.number)
    sources = [t.user_attrs["source"] for t in trials]
    seeds = sources.count("tuned_baseline")
    assert seeds >= 3 and sources[:seeds] == ["tuned_baseline"] * seeds
    assert sources[seeds:seeds + 2] == ["proxy_top_k"] * 2 and "cma_es" in sources
    chosen = choose(recipe(pair, tmp_path / "run", baselines="tuned", genome_rule="v3"),
                    None, study).candidates
    for t in trials[:seeds]:
        assert Genome(**t.params, genome_rule="v3") == chosen[t.user_attrs["anchor"]].genome()
    for t in trials[seeds:seeds + 2]:  # Phase 1's v2 genomes, read under v3
        assert {k: t.params[k] for k in V3_AS_V2} == V3_AS_V2
    for t in trials:
        assert set(t.params) == set(genes_of("v3"))
        assert all(GENE_BOUNDS[k][0] <= v <= GENE_BOUNDS[k][1] for k, v in t.params.items())
    assert summary.best.genome["genome_rule"] == "v3"
    written = json.loads((tmp_path / "run" / "child" / "darwin_merge.json").read_text())
    assert written["genome"]["genome_rule"] == "v3"
    assert written["genome"]["scale_a"] == summary.best.genome["scale_a"]
    card = (tmp_path / "run" / "child" / "README.md").read_text()
    assert "| scale_b |" in card and "task arithmetic's lambda" in card
    # CMA-ES's step comes from the seeds (not v2's fixed 0.15), recorded and shown
    step = study.user_attrs["cma_es_sigma0"]
    assert step != phase2.SIGMA0_V2 and summary.phase2.cma_es_step == step
    assert f"| CMA-ES first step (sigma0, gene coordinates in [0, 1]) | {step:.4g}" in card


def test_cma_es_steps_as_far_as_the_best_seeds_lie_apart():
    """seed_spread: the RMS over genes of the seeds' standard deviation (by hand: genes
    (0.2, 0.4) and (0.3, 0.4) give sqrt((0.005 + 0) / 2) = 0.05), clipped to SIGMA_RANGE; one
    seed: v2's step."""
    assert phase2.seed_spread([[0.2, 0.4], [0.3, 0.4]]) == pytest.approx(0.05)
    assert phase2.seed_spread([[0.5, 0.5]] * 3) == phase2.SIGMA_RANGE[0]
    assert phase2.seed_spread([[0.0, 1.0], [1.0, 0.0]]) == phase2.SIGMA_RANGE[1]
    assert phase2.seed_spread([[0.3, 0.3]]) == phase2.SIGMA0_V2


def test_cma_es_step_is_chosen_once_and_a_given_one_wins(pair, tmp_path):
    """The recipe's sigma0 wins; v2 without one takes 0.15; the step chosen is kept in the
    study, so a resumed run (here with another sigma0) goes on with the same step."""
    v2 = recipe(pair, tmp_path / "a")
    assert phase2.cma_es_sigma(v2, optuna.create_study()) == phase2.SIGMA0_V2
    study = optuna.create_study()
    assert phase2.cma_es_sigma(recipe(pair, tmp_path / "b", sigma0=0.07,
                                      genome_rule="v3"), study) == 0.07
    assert phase2.cma_es_sigma(recipe(pair, tmp_path / "b", sigma0=0.2), study) == 0.07
    # a study whose CMA-ES ran before the step was kept goes on with the step it had
    older = optuna.create_study()
    older.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=0.5,
                                              user_attrs={"phase": 2, "source": "cma_es"}))
    assert phase2.cma_es_sigma(recipe(pair, tmp_path / "d", genome_rule="v3"),
                               older) == phase2.SIGMA0_V2
    sampler = phase2.make_sampler(recipe(pair, tmp_path / "c", cma="separable"),
                                  {"global_ratio": 0.5}, 0.07)
    assert sampler._use_separable_cma and sampler._sigma0 == 0.07


def test_the_anchors_leave_cma_es_two_generations_of_the_budget(pair, tmp_path):
    """Under v3, 24 candidates, popsize 6, 2 top-k: 10 of the 12 anchors (the last swaps
    left out first), so that CMA-ES has 2 generations; with 64 all 12; with 12 none. Under
    v2 the queue is as before: 24 candidates hold all 12."""
    top_k = [{"genome": Genome().model_dump(), "proxy_fitness": 0.5}] * 2
    for rule, trials, anchors in (("v3", 24, 10), ("v3", 64, 12), ("v3", 12, 0),
                                  ("v2", 24, 12)):
        study = optuna.create_study()
        phase2.enqueue_seeds(study, {"top_k": top_k}, [], recipe(
            pair, tmp_path, trials=trials, popsize=6, genome_rule=rule))
        waiting = study.get_trials(states=(TrialState.WAITING,))
        names = [t.user_attrs.get("anchor") for t in waiting
                 if t.user_attrs["source"] == "anchor"]
        assert names == list(phase2.anchor_genomes())[:anchors]
