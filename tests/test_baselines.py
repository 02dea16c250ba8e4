"""The baselines a child is measured against (evolve/baselines.py, mergekit/standard.py):
the standard recipes merged in memory are the children their mergekit YAML makes, the tuned
ones are chosen on the search split only and keep their guards, and the reports state the
statistics honestly (a p at the bootstrap's floor is a bound; the proxy's Spearman over
fully scored candidates counts no racing estimate; candidates passed over by the health
gate are listed)."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from safetensors.torch import load_file

from darwin_merge.eval import paired
from darwin_merge.eval.results import TaskResult
from darwin_merge.evolve import baselines
from darwin_merge.evolve.recipe import build_recipe
from darwin_merge.evolve.run import run_evolve
from darwin_merge.evolve.study import proxy_spearman
from darwin_merge.merge.engine import ParentTensors
from darwin_merge.mergekit import merge_from_config
from darwin_merge.mergekit.standard import StandardMerger, StandardRecipe, tensors_digest
from darwin_merge.report_tables import difference_cell
from darwin_merge.scan import run_scan
from darwin_recipes.demo.run import results_markdown


@pytest.fixture(scope="module")
def trio(tiny_trio) -> tuple[Path, Path, Path]:
    """(base, father, mother): a tiny Llama and two fine-tunes of it (tests/conftest.py)."""
    return tiny_trio


def through_yaml(point: StandardRecipe, trio, folder: Path) -> dict[str, torch.Tensor]:
    """The child `darwin merge --mergekit-config` makes of the point's YAML."""
    base, father, mother = trio
    folder.mkdir()
    config = folder / "config.yml"
    config.write_text(yaml.safe_dump(point.mergekit_dict(str(father), str(mother), base=str(base))))
    merge_from_config(config, folder / "child", progress=False)
    return load_file(folder / "child" / "model.safetensors")


@pytest.mark.parametrize("point", [StandardRecipe(method="task_arithmetic", scale=1.3),
                                   StandardRecipe(method="task_arithmetic", scale=0.7),
                                   StandardRecipe(method="ties", scale=1.0, density=0.5),
                                   StandardRecipe(method="ties", scale=1.25, density=1.0)])
def test_a_standard_recipe_in_memory_is_the_child_of_its_mergekit_yaml(trio, tmp_path, point):
    """Bit for bit, also when the merger's memo was filled by another scale of the same
    method and density (the tuning grid's shortcut)."""
    base, father, mother = trio
    merger = StandardMerger(ParentTensors.load(father, mother, base))
    warm = merger.state(point.model_copy(update={"scale": point.scale + 0.5}))  # fills the memo
    in_memory = merger.state(point)
    written = through_yaml(point, trio, tmp_path / "yaml")
    assert set(in_memory) == set(written)
    for name, tensor in written.items():
        assert torch.equal(in_memory[name], tensor), name
    moved = [n for n in written if not torch.equal(warm[n], written[n])]
    assert moved  # the scale changes the child: the memo did not freeze it


def test_a_dare_ties_point_draws_one_mask_for_every_scale(trio):
    """DARE-TIES's masks come from one seed: two scales of one density give task vectors
    in the ratio of their scales, entry for entry; another density drops other entries."""
    base, father, mother = trio
    parents = ParentTensors.load(father, mother, base)
    merger = StandardMerger(parents)
    name = "model.layers.0.mlp.up_proj.weight"
    one = merger.state(StandardRecipe(method="dare_ties", scale=1.0, density=0.5))[name]
    two = merger.state(StandardRecipe(method="dare_ties", scale=0.5, density=0.5))[name]
    other = merger.state(StandardRecipe(method="dare_ties", scale=1.0, density=0.7))[name]
    w = parents.base[name]
    torch.testing.assert_close(two - w, (one - w) * 0.5, atol=1e-6, rtol=1e-5)
    assert not torch.equal((one - w) == 0, (other - w) == 0)


class SplitScorer:
    """A stand-in for CandidateScorer: a standard recipe's items are scored by a planted
    rule that depends on the split. On the search split TIES at density 0.3 and lambda 0.5
    is the best point and task arithmetic at 1.5 the best of its recipe but it breaks the
    guard; on the holdout another point would win. Records every split it is asked for."""

    weights = {"simple_arithmetic": 1.0}
    tasks, guard_tasks = ["simple_arithmetic", "arc_easy"], ["arc_easy"]
    limit, split, model, tokenizer = 20, "search", None, None

    def __init__(self):
        self.splits: list[str] = []
        self.loaded: StandardRecipe | None = None

    def state_of(self, candidate):
        self.merged = candidate
        return {"merge": torch.tensor(list(self.merge_of(candidate).encode()))}

    def merge_of(self, candidate) -> str:
        """Which merge a point makes (each point its own here; a genome: the fixed ones)."""
        return getattr(candidate, "name", repr(candidate))

    def load(self, state):
        self.loaded = self.merged

    def merge_fingerprint(self, candidate) -> str:
        return self.merge_of(candidate)

    def accuracy(self, split: str) -> float:
        p = self.loaded
        planted = {("search", "ties", 0.3, 0.5): 0.95, ("search", "task_arithmetic", 1.0, 1.5): 0.9,
                   ("holdout", "dare_ties", 1.0, 1.25): 0.99}
        return planted.get((split, p.method, p.density, p.scale), 0.5 - 0.1 * abs(p.scale - 1))

    def result(self, task: str, n: int) -> dict:
        if task == "arc_easy":  # the guard: task arithmetic 1.5 loses it
            share = 0.1 if (self.loaded.method, self.loaded.scale) == ("task_arithmetic", 1.5) \
                else 0.5
        else:
            share = self.accuracy(self.split)
        scores = [float(int((i + 1) * share) > int(i * share)) for i in range(n)]  # spread
        return TaskResult(kind="loglik", split=self.split, n=n, metric="acc",
                          higher_is_better=True,
                          metrics={"acc": sum(scores) / n, "acc_stderr": 0.01},
                          item_ids=list(range(n)), item_scores=scores)

    def evaluate_loaded(self, task, limit, skip=0):
        self.splits.append(self.split)
        whole = self.result(task, self.limit)
        return whole.model_copy(update={"item_ids": list(range(skip, limit)),
                                        "item_scores": whole.item_scores[skip:limit],
                                        "n": limit - skip})

    def evaluate_loaded_all(self, tasks):
        self.splits.append(self.split)
        self.guard_calls = getattr(self, "guard_calls", 0) + 1
        return {t: self.result(t, self.limit) for t in tasks}


def guarded_tuning(trio, folder: Path, monkeypatch) -> tuple:
    """(recipe, study) of a tuning with an ARC-Easy guard against a base at 0.5, every
    health check planted healthy."""
    import darwin_merge.health as health

    monkeypatch.setattr(health, "run_health", lambda *a, **k: {
        "verdict": "healthy", "reasons": [], "flagged_layers": []})
    base, father, mother = trio
    recipe = build_recipe(father=father, mother=mother, base=base, out=folder,
                          fitness={"simple_arithmetic": 1.0}, guard={"arc_easy": 0.05})
    study = optuna.create_study(direction="maximize")
    full = {"n": 20, "metric": "acc", "higher_is_better": True, "acc": 0.5}
    study.set_user_attr("parent_search_scores", {"base": {"arc_easy": full}})
    return recipe, study


def test_tuned_baselines_choose_on_the_search_split_and_keep_their_guards(trio, tmp_path,
                                                                            monkeypatch):
    recipe, study = guarded_tuning(trio, tmp_path, monkeypatch)
    scorer = SplitScorer()
    chosen = baselines.run_baselines(recipe, scorer, study)
    assert set(scorer.splits) == {"search"}  # the holdout is never read to choose
    record = chosen.record
    assert record.chosen["ties"] == "ties_d0.3_l0.5"
    assert record.chosen["dare_ties"] != "dare_ties_d1_l1.25"  # the holdout's optimum
    # task arithmetic at 1.5 scores best on the items but breaks the guard
    assert record.chosen["task_arithmetic"] == "task_arithmetic_l1"
    point = {p.name: p for p in record.points}["task_arithmetic_l1.5"]
    assert point.guards_kept is False and point.search_fitness < 0
    assert record.best_tuned == record.best_healthy_tuned == "ties_d0.3_l0.5"
    assert len(record.points) == 8 + 16 + 16
    assert {"dare_ties_0.5", "linear_0.5", "task_arithmetic_l1", "ties_d0.3_l0.5"} <= set(
        chosen.candidates)
    # continued from the study: nothing is scored again
    scorer.splits.clear()
    again = baselines.run_baselines(recipe, scorer, study)
    assert scorer.splits == [] and again.record == record


def exhaustive_choice(recipe, scorer, study, points) -> tuple[dict, dict]:
    """Each recipe's best point and best healthy point with every fully scored point
    guarded and health-checked: the rule written out, no walk."""
    chosen, healthy = {}, {}
    for family, grid in baselines.tuning_grid().items():
        order = [p.name for p in grid]
        full = [n for n, p in points.items() if p["family"] == family
                and p["race"]["outcome"] == "full"]
        for name in full:
            baselines.with_guards(recipe, scorer, study, points, name)
            baselines.health_of(recipe, scorer, study, StandardRecipe(**points[name]["recipe"]),
                                name)
        verdicts = study.user_attrs[baselines.HEALTH_ATTR]
        tries = sorted(full, key=lambda n: (-baselines.fitness_of_point(points[n]),
                                            order.index(n)))[:3]
        accepted = [n for n in tries if verdicts[n] == "healthy"]
        chosen[family] = min(full, key=lambda n: (-points[n]["value"], order.index(n)))
        healthy[family] = min(accepted, key=lambda n: (-points[n]["value"], order.index(n)),
                              default=None)
    return chosen, healthy


def test_guards_are_scored_only_where_they_can_change_the_choice(trio, tmp_path, monkeypatch):
    """The guard tasks (most of a full point's cost) are scored best fitness first, only
    until no point left can be chosen, and on a point tried for health only when the check
    accepts it: some points are never guarded, and guarding and checking every point
    afterwards changes no choice. Planted: the three best points of task arithmetic by
    fitness fail the health check (the third, lambda 1.15, was never racing's rival, so no
    guard of it can change anything); the best (lambda 1.5) also breaks the guard."""
    import darwin_merge.health as health

    recipe, study = guarded_tuning(trio, tmp_path, monkeypatch)
    sick = {"task_arithmetic_l1.5", "task_arithmetic_l1", "task_arithmetic_l1.15"}
    scorer = SplitScorer()
    monkeypatch.setattr(health, "run_health", lambda child, *a, **k: {
        "verdict": "unhealthy" if getattr(scorer.loaded, "name", None) in sick else "healthy",
        "reasons": [], "flagged_layers": []})
    record = baselines.run_baselines(recipe, scorer, study).record
    scored = [p for p in record.points if p.fully_scored]
    unguarded = [p for p in scored if p.guards_scored is False]
    assert unguarded and scorer.guard_calls == len(scored) - len(unguarded)
    assert record.chosen["task_arithmetic"] == "task_arithmetic_l1"
    assert record.healthy["task_arithmetic"] is None  # its three tries failed
    third = {p.name: p for p in record.points}["task_arithmetic_l1.15"]
    assert third.health == "unhealthy" and third.guards_scored is False
    points = dict(study.user_attrs[baselines.POINTS_ATTR])
    assert exhaustive_choice(recipe, scorer, study, points) == (record.chosen, record.healthy)
    assert scorer.guard_calls == len(scored)  # every point guarded now, as before the walk


class LambadaBreaker(SplitScorer):
    """Two guards; LAMBADA breaks on every point (as on the overlap specialists). Records
    the guard tasks of each call."""

    tasks = ["simple_arithmetic", "arc_easy", "lambada_openai"]

    def __init__(self, guard_tasks):
        super().__init__()
        self.guard_tasks, self.guard_scored = guard_tasks, []

    def result(self, task: str, n: int) -> dict:
        if task != "lambada_openai":
            return super().result(task, n)
        return super().result("arc_easy", n).model_copy(update={
            "metrics": {"acc": 0.0, "acc_stderr": 0.0}, "item_scores": [0.0] * n})

    def evaluate_loaded_all(self, tasks):
        self.guard_scored.append(tuple(tasks))
        return super().evaluate_loaded_all(tasks)


def test_a_points_guards_stop_at_the_first_broken_one(trio, tmp_path, monkeypatch):
    """Any broken guard costs the same penalty: once LAMBADA has broken, later points score
    it first and alone, and a second guard changes no value and no choice."""
    values = {}
    for guards in (["lambada_openai"], ["arc_easy", "lambada_openai"]):
        recipe, study = guarded_tuning(trio, tmp_path / str(len(guards)), monkeypatch)
        recipe = recipe.model_copy(update={"guard": {t: 0.05 for t in guards}})
        half = {"n": 20, "metric": "acc", "higher_is_better": True, "acc": 0.5}
        study.set_user_attr("parent_search_scores", {"base": dict.fromkeys(guards, half)})
        scorer = LambadaBreaker(guards)
        record = baselines.run_baselines(recipe, scorer, study).record
        values[len(guards)] = ({p.name: p.search_fitness for p in record.points},
                               record.chosen, record.healthy)
        assert all(p.guards_kept is False for p in record.points if p.guards_scored)
    assert scorer.guard_scored[:2] == [("arc_easy",), ("lambada_openai",)]
    assert set(scorer.guard_scored[2:]) == {("lambada_openai",)}
    assert values[1] == values[2]


class TwinScorer(SplitScorer):
    """DARE-TIES at density 1 makes TIES's merge at density 1 (planted: as when both drop
    nothing and sum alike)."""

    def merge_of(self, candidate) -> str:
        return super().merge_of(candidate).replace("dare_ties_d1_", "ties_d1_")


def test_points_that_make_the_same_merge_are_scored_and_checked_once(trio, tmp_path,
                                                                      monkeypatch):
    import darwin_merge.health as health

    checked = []
    monkeypatch.setattr(health, "run_health", lambda child, *a, **k: checked.append(
        child) or {"verdict": "unhealthy", "reasons": ["planted"], "flagged_layers": []})
    base, father, mother = trio
    recipe = build_recipe(father=father, mother=mother, base=base, out=tmp_path,
                          fitness={"simple_arithmetic": 1.0})
    study = optuna.create_study(direction="maximize")
    alone, twins = SplitScorer(), TwinScorer()
    separate = baselines.run_baselines(recipe, alone, optuna.create_study(direction="maximize"))
    checks_alone, checked[:] = len(checked), []
    shared = baselines.run_baselines(recipe, twins, study)
    points = {p.name: p for p in shared.record.points}
    assert {n for n, p in points.items() if p.same_merge_as} == {
        f"dare_ties_d1_l{s:g}" for s in baselines.TRIM_SCALES}
    assert points["dare_ties_d1_l1"].same_merge_as == "ties_d1_l1"
    assert points["dare_ties_d1_l1"].search_fitness == points["ties_d1_l1"].search_fitness
    assert len(twins.splits) < len(alone.splits)  # four points fewer scored
    assert {p.name: p.search_fitness for p in separate.record.points} == {
        n: p.search_fitness for n, p in points.items()}  # and every value the same
    # every point unhealthy: each recipe's three best checked, a twin's verdict taken over
    assert len(checked) < checks_alone
    assert shared.record.health["dare_ties_d1_l1"] == "unhealthy"


def test_a_merge_digest_tells_twin_recipes_from_different_ones(trio, tmp_path):
    """On task vectors that never share a tensor, TIES and DARE-TIES at density 1 make task
    arithmetic's merge, to the bit; a trim of density 0.5 does not."""
    from safetensors.torch import save_file

    base, father, mother = trio
    folders = {}
    for role, source, layer in (("father", father, "layers.1."), ("mother", mother, "layers.0.")):
        tensors = load_file(base / "model.safetensors")
        tensors.update({n: t for n, t in load_file(source / "model.safetensors").items()
                        if layer in n})
        folders[role] = tmp_path / role
        folders[role].mkdir()
        save_file(tensors, folders[role] / "model.safetensors")
        (folders[role] / "config.json").write_text((base / "config.json").read_text())
    merger = StandardMerger(ParentTensors.load(folders["father"], folders["mother"], base))

    def digest(method, density=1.0, scale=1.0):
        recipe = StandardRecipe(method=method, scale=scale, density=density)
        fingerprint = merger.fingerprint(recipe)
        return fingerprint, tensors_digest(merger.state(recipe))  # and the whole child

    assert digest("task_arithmetic") == digest("ties") == digest("dare_ties")
    assert digest("ties", 0.5)[0] != digest("ties")[0]
    assert digest("ties", 0.5)[1] != digest("ties")[1]
    assert digest("ties", scale=0.5)[0] != digest("ties")[0]


def test_the_proxy_spearman_over_fully_scored_candidates_counts_no_racing_estimate():
    study = optuna.create_study(direction="maximize")

    def add(value: float, proxy: float, outcome: str) -> None:
        study.add_trial(optuna.trial.create_trial(value=value, params={}, distributions={},
                        user_attrs={"phase": 2, "proxy_fitness": proxy,
                                    "race": {"outcome": outcome}}))

    for i in range(5):  # fully scored: ranked exactly as the proxy ranks them
        add(0.1 * i, float(i), "full")
    for i in range(5):  # stopped: racing's estimates ranked the other way
        add(0.5 - 0.1 * i, 10.0 + i, "stopped")
    assert proxy_spearman(study, fully_scored_only=True) == (pytest.approx(1.0), 5)
    rho, pairs = proxy_spearman(study)
    assert pairs == 10 and rho < 0.9


def test_a_p_value_at_the_bootstraps_floor_is_printed_as_a_bound():
    better = ([1.0] * 40 + [0.5] * 10, [0.0] * 40 + [0.5] * 10)
    at_floor = paired.compare_weighted({"a": better}, {"a": 1.0})
    assert at_floor["p"] == pytest.approx(1 / (paired.RESAMPLES + 1))
    assert difference_cell(at_floor).endswith("(p < 1e-4 (10,000 resamples))")
    close = paired.compare_weighted({"a": ([1.0, 0.0] * 10, [0.0, 1.0] * 9 + [0.0, 0.0])},
                                    {"a": 1.0})
    assert close["p"] > 0.01 and f"(p {close['p']:.3g})" in difference_cell(close)


@pytest.fixture(scope="module")
def scanned(trio, tmp_path_factory):
    base, father, mother = trio
    root = tmp_path_factory.mktemp("gate")
    run_scan(father, mother, root / "scan", max_tokens=16, max_prompts=2, progress=False)
    return root / "scan" / "scan.json"


def test_a_better_candidate_rejected_by_health_is_listed_in_results(trio, scanned, tmp_path,
                                                                     monkeypatch):
    """The best seed's child fails the health check (before CMA-ES would start there): the
    child is another genome, and RESULTS.md lists the rejected candidate with its search
    fitness, verdict, reason and probe losses; evolution.png crosses it out and its best-so-far
    line ends at the child's fitness, not the rejected one's. With --baselines fixed, the
    fixed baselines are in the holdout table."""
    import darwin_merge.health as health
    import darwin_merge.plots.evolution as evolution

    checked, drawn = [], []
    monkeypatch.setattr(evolution, "plot_evolution",
                        lambda rows, *args, **kw: drawn.append((rows, kw["rejected"])))

    def check(child, *args, **kw):
        checked.append(child)
        first = len(checked) == 1
        return {"verdict": "unhealthy" if first else "healthy",
                "reasons": ["planted: function loss on CODE"] if first else [],
                "flagged_layers": [],
                "probe_sets": {"CODE": {"loss": {"child": 3.25, "father": 1.5,
                                                 "mother": 1.75}}}}

    monkeypatch.setattr(health, "run_health", check)
    # the seeds alone are checked (before CMA-ES), not each new best as it comes (tested in
    # tests/test_evolve.py): the best seed is then the first one checked
    from darwin_merge.evolve import phase2
    monkeypatch.setattr(phase2, "check_scored", lambda *args: None)
    base, father, mother = trio
    run = build_recipe(father=father, mother=mother, fitness={"arc_easy": 0.5,
                       "simple_arithmetic": 0.5}, out=tmp_path / "run", scan=scanned,
                       trials=4, limit=3, phase1_steps=10, top_k=2, popsize=4,
                       holdout_limit=3, baselines="fixed")
    summary = run_evolve(run)
    assert checked.count(run.out / "child") == 1  # the seed was checked in memory first
    [rejected] = summary.rejected_by_health
    assert rejected.search_fitness > summary.best.search_fitness
    text = results_markdown(summary, run.out)
    assert (f"- trial {rejected.trial}: search fitness {rejected.search_fitness:.4f}, "
            "unhealthy (planted: function loss on CODE); probe losses (nats per token): "
            "CODE child 3.250, father 1.500, mother 1.750") in text
    assert summary.baseline_search.mode == "fixed"
    assert {"dare_ties_0.5", "linear_0.5", "task_arithmetic_l1"} <= set(summary.holdout.models)
    assert "| task_arithmetic_l1 | task arithmetic, lambda 1 | fixed |" in text
    rows, crossed = drawn[-1]  # the picture drawn last, after the finish
    assert rejected.trial in crossed
    best, _ = evolution.best_so_far(sorted((r for r in rows if r["phase"] == 2),
                                           key=lambda r: r["number"]), crossed)
    assert best[-1] == summary.best.search_fitness < rejected.search_fitness
    written = json.loads((run.out / "summary.json").read_text())
    assert written["baseline_search"]["recipes"]["task_arithmetic_l1"]["scale"] == 1.0


class CountingWorker:
    """A stand-in for CandidateScorer on the holdout: records which model each evaluation
    ran on; a model's score is its planted weight (so different models score differently)."""

    device, model = "cuda", None  # one worker: score_concurrently runs the jobs in turn

    def __init__(self):
        self.evaluated: list[tuple[float, str]] = []
        self.state: dict | None = None

    def load(self, state):
        self.state = state

    def evaluate_loaded_tasks(self, tasks, split, limit, log_samples=False):
        weight = float(self.state["w"])
        self.evaluated.append((weight, tasks[0]))
        return {tasks[0]: TaskResult(kind="loglik", split=split, n=1, metric="acc",
                                     higher_is_better=True, metrics={"acc": weight},
                                     item_ids=[0], item_scores=[weight],
                                     logged_samples=[{"weight": weight}])}


def test_the_holdout_scores_a_merge_once_however_many_baselines_make_it():
    from darwin_merge.evolve.holdout import HoldoutJobs

    worker = CountingWorker()
    models = {"task_arithmetic_l1": {"w": 1.0}, "ties_d1_l1": {"w": 1.0},
              "ties_d0.5_l1": {"w": 0.5}}
    done = HoldoutJobs(models, {"a": 10, "b": 10},
                       same_as={"ties_d1_l1": "task_arithmetic_l1"}).run(worker)
    assert sorted(worker.evaluated) == [(0.5, "a"), (0.5, "b"), (1.0, "a"), (1.0, "b")]
    assert done["ties_d1_l1", "a"] == done["task_arithmetic_l1", "a"]
    assert done["ties_d0.5_l1", "b"].primary == 0.5
    assert done["ties_d1_l1", "a"].logged_samples == [{"weight": 1.0}]  # the twin's records


def test_twin_baselines_are_the_candidates_whose_merge_an_earlier_one_makes():
    points = {"task_arithmetic_l1": {"merge_digest": "x"}, "ties_d1_l1": {"merge_digest": "x"},
              "dare_ties_d1_l1": {"merge_digest": "x"}, "ties_d0.5_l1": {"merge_digest": "y"}}
    candidates = {"dare_ties_0.5": None, "linear_0.5": None, **dict.fromkeys(points)}
    assert baselines.twin_candidates(candidates, points) == {
        "ties_d1_l1": "task_arithmetic_l1", "dare_ties_d1_l1": "task_arithmetic_l1"}
    # the fixed darwin genomes carry no fingerprint: never taken for twins
    assert baselines.twin_candidates({"dare_ties_0.5": None, "linear_0.5": None}, {}) == {}
