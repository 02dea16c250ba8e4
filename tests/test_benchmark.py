"""The merge-quality benchmark (benchmark/): problems as data, seeds sharing one scan and one
scoring of the parents and baselines, the hierarchical bootstrap, the report and picture."""

from __future__ import annotations

import numpy as np
import pytest

from darwin_merge.errors import UsageError
from darwin_merge.eval.paired import hierarchical_bootstrap, p_text
from darwin_merge.records import read_record
from darwin_merge.records.benchmark import ProblemResult
from darwin_recipes.benchmark import run as bench
from darwin_recipes.benchmark.problem import load_problem, parse_problem, shipped_problems
from darwin_recipes.benchmark.report import specialist_check
from darwin_recipes.demo.test_items import training_contexts

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the statistics -------------------------------------------------------------------------

def test_the_interval_widens_when_the_seeds_disagree():
    """The same items' differences, once with every seed alike and once with the seeds
    spread by +-0.15: an interval that resamples items only would be the same width."""
    rng = np.random.default_rng(0)
    items = rng.choice([-1.0, 0.0, 1.0], size=300, p=[0.2, 0.5, 0.3])
    alike = {"t": np.stack([items] * 3)}
    spread = {"t": np.stack([items - 0.15, items, items + 0.15])}
    narrow, wide = (hierarchical_bootstrap(d, {"t": 1.0}) for d in (alike, spread))
    assert narrow["diff"] == pytest.approx(wide["diff"])
    assert (wide["ci_high"] - wide["ci_low"]) > 1.3 * (narrow["ci_high"] - narrow["ci_low"])


def test_the_interval_leaves_out_zero_exactly_when_p_is_below_five_percent():
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.03, 0.06, 0.1, 0.2):
        diffs = {"a": rng.normal(shift, 0.5, size=(3, 150)),
                 "b": rng.normal(shift / 2, 0.5, size=(3, 150))}
        stats = hierarchical_bootstrap(diffs, {"a": 0.5, "b": 0.5})
        outside = stats["ci_low"] > 0 or stats["ci_high"] < 0
        assert outside == (stats["p"] < 0.05), (shift, stats)


def test_a_p_at_the_hierarchical_bootstraps_floor_prints_as_a_bound():
    stats = hierarchical_bootstrap({"t": np.ones((3, 50))}, {"t": 1.0})
    assert stats["p"] == pytest.approx(2 / 10_001)
    assert p_text(stats["p"], stats["test"]) == "< 1e-3 (10,000 resamples)"


def test_seeds_scored_on_other_items_are_refused():
    with pytest.raises(ValueError, match="same seeds"):
        hierarchical_bootstrap({"a": np.zeros((3, 5)), "b": np.zeros((2, 5))},
                               {"a": 0.5, "b": 0.5})


# -- problems as data -----------------------------------------------------------------------

def test_the_shipped_problems_are_the_benchmarks_and_the_demo_pairs():
    problems = shipped_problems()
    assert set(bench.QUICK_PROBLEMS) <= set(problems)
    assert {"gemma3-specialists-disjoint", "gemma3-specialists-overlap",
            "tiny-specialists"} <= set(problems)
    overlap = problems["smollm2-specialists-overlap"].recipes()
    disjoint = problems["smollm2-specialists-disjoint"].recipes()
    # the same skills and training, only the trained blocks differ
    for role in ("father", "mother"):
        assert overlap[role].skill == disjoint[role].skill
        assert overlap[role].last_trained_layer is None and overlap[role].first_trained_layer == 0
    assert disjoint["father"].last_trained_layer == 14
    assert disjoint["mother"].first_trained_layer == 15
    # every demo pair is a problem file with the budget `make demo` runs it with; Gemma 3's
    # father-mother mother is its arithmetic specialist (one cached fine-tune for both pairs)
    from darwin_recipes.demo import run as demo

    assert {problems[name].demo is not None for name in demo.DEMO_PROBLEMS.values()} == {True}
    assert {n for n, p in problems.items() if p.demo is not None} == set(
        demo.DEMO_PROBLEMS.values())
    assert demo.FAMILY_MOTHERS["gemma3"] == demo.SPECIALIST_RECIPES["gemma3"]["father"]
    assert demo.budget_of("smollm2", "specialists")["trials"] == 64
    assert demo.budget_of("gemma3", "specialists")["limit"] == 50
    # the real pairs share one budget but Gemma 3's specialists (measured with a smaller one)
    shared = [problems[demo.DEMO_PROBLEMS[key]].demo for key in (
        ("smollm2", "specialists"), ("smollm2", "father-mother"), ("gemma3", "father-mother"))]
    assert shared[0] == shared[1] == shared[2]


@pytest.mark.parametrize(("text", "message"), [
    ("name: x\nfamily: smollm2\nfitness: {a: 1}\n", "names its father and mother"),
    ("name: x\nfamily: tiny\nfather: base\nfitness: {a: 1}\n", "trio's own"),
    ("name: x\nfamily: smollm2\nfather: base\nmother: {skill: letter_reversal}\n"
     "fitness: {a: 1}\n", "cannot be merged with the base"),
    ("name: x\nfamily: smollm2\nfather: {skill: letter_reversal}\nmother: {lrr: 1}\n"
     "fitness: {a: 1}\n", "unknown recipe field"),
    ("name: x\nfamily: smollm2\nfather: {skill: letter_reversal}\nmother: {}\n"
     "fitness: {a: 1}\ntest: {b: 10}\n", "not a task of the problem"),
    ("name: x\nfamily: smollm2\nfitnes: {a: 1}\n", "fitnes"),
    ("name: x\nfamily: smollm2\nfather: base\nparents: [{skill: letter_reversal}, "
     "{skill: digit_sorting}]\nfitness: {a: 1}\n", "instead of father and mother"),
    ("name: x\nfamily: smollm2\nparents: [{skill: letter_reversal}]\nfitness: {a: 1}\n",
     "two or more"),
    ("[1, 2]", "a mapping"),
])
def test_a_bad_problem_file_is_a_one_line_error(text, message):
    with pytest.raises(UsageError, match=message) as info:
        parse_problem(text, "p.yaml")
    assert "\n" not in str(info.value) and str(info.value).startswith("p.yaml")


def test_the_trio_problem_names_three_overlapping_specialists(tmp_path):
    """The three-specialist problem (issue 38): its first two parents are the overlap
    problem's specialists (one cached fine-tune each), the third sorts digits, each trained
    in every block; it has fresh test items for the three skills; the two-parent search
    refuses it in one line."""
    trio = load_problem("smollm2-specialists-trio")
    recipes = trio.recipes()
    overlap = load_problem("smollm2-specialists-overlap").recipes()
    assert list(recipes) == ["model_1", "model_2", "model_3"]
    assert (recipes["model_1"], recipes["model_2"]) == (overlap["father"], overlap["mother"])
    assert recipes["model_3"].skill == "digit_sorting"
    assert all(r.first_trained_layer == 0 and r.last_trained_layer is None
               for r in recipes.values())
    assert set(trio.test) == set(trio.fitness) == {r.skill for r in recipes.values()}
    with pytest.raises(UsageError, match="not searched yet"):
        bench.run_problem(trio, tmp_path, tmp_path)


def test_an_unknown_problem_names_the_known_ones():
    with pytest.raises(UsageError, match="smollm2-specialists-disjoint"):
        load_problem("smollm2-nothing")


def test_fresh_test_items_leave_out_every_benchmark_fine_tunes_training(tmp_path):
    """The overlap and father-mother fine-tunes are not demo recipes: their training problems
    are left out too."""
    recipes = bench.excluded_recipes()
    for problem in shipped_problems().values():
        for recipe in problem.recipes().values():
            assert recipe in recipes
    problem = load_problem("smollm2-father-mother")
    sets = bench.test_items(problem, {t: t for t in problem.tasks()}, tmp_path, 5, "quick")
    path = sets["two_digit_arithmetic"].name
    contexts = {line.split('"context": "')[1].split('"')[0]
                for line in open(path, encoding="utf-8")}
    assert len(contexts) == problem.test["two_digit_arithmetic"]
    assert not contexts & training_contexts(problem.recipes()["mother"])
    assert sets["arc_easy"].split == "holdout" and sets["two_digit_arithmetic"].split == "all"


# -- a whole run on the tiny trio -----------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_bench(two_skill_pair, tmp_path_factory):
    from darwin_merge.evolve.scoring import CandidateScorer

    cache = two_skill_pair[0].parents[2]
    out = tmp_path_factory.mktemp("bench")
    scored_parents = []
    score_parent = CandidateScorer.score_parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(CandidateScorer, "score_parent", lambda self, which, *a, **k: (
            scored_parents.append(which), score_parent(self, which, *a, **k))[1])
        results = bench.run_benchmark(["tiny-specialists"], out, cache, seeds=(0, 1),
                                      trials=6, command="darwin bench quality tiny-specialists")
    return out, results[0], scored_parents


@pytest.mark.slow
def test_the_seeds_share_one_scan_and_one_scoring_of_the_others(tiny_bench):
    out, result, scored_parents = tiny_bench
    folder = out / "tiny-specialists"
    # the parents and base scored once on the search split, for both seeds
    assert sorted(scored_parents) == ["base", "father", "mother"]
    assert (folder / "scan" / "scan.json").is_file()
    assert not any((folder / f"seed-{s}" / "scan").exists() for s in (0, 1))
    scored = sorted(p.stem for p in (folder / "test" / "test-seed-2026").glob("*.json"))
    children = [n for n, m in result.models.items() if m.kind == "child"]
    assert children == ["child (seed 0)", "child (seed 1)"]
    # one file per model: the parents, base and baselines once, a child per seed
    # a seed's CMA-ES start is scored only when it is not its child (else its scores)
    unscored = [s for s in (0, 1) if f"CMA-ES_start_seed_{s}" not in scored]
    assert len(scored) == len(result.models) - len(unscored) and "child_seed_1" in scored
    for s in unscored:
        assert result.models[bench.start_name(s)].item_scores == \
            result.models[f"child (seed {s})"].item_scores
    assert {"father", "mother", "base", "task_arithmetic_l1"} <= set(result.models)
    assert result.best_tuned in result.models and result.chosen
    # the record as written reads back, and the children's rows are their own
    again = read_record(ProblemResult, folder / "result.json")
    assert again == result
    assert again.models["child (seed 0)"].seed == 0


@pytest.mark.slow
def test_the_comparisons_are_the_childrens_per_seed_differences(tiny_bench):
    _, result, _ = tiny_bench
    base = result.models["base"]
    comparison = result.comparisons["base"]
    for seed, diff in zip(result.seeds, comparison.per_seed, strict=True):
        assert diff == pytest.approx(result.models[f"child (seed {seed})"].fitness - base.fitness)
    assert comparison.diff == pytest.approx(np.mean(comparison.per_seed))
    assert comparison.ci_low <= comparison.diff <= comparison.ci_high
    # what CMA-ES added: each child against its own seed's CMA-ES start, not another's
    gain = result.cma_es_gain
    for seed, diff in zip(result.seeds, gain.per_seed, strict=True):
        start = result.models[bench.start_name(seed)]
        assert start.kind == "start" and start.seed == seed
        assert diff == pytest.approx(result.models[f"child (seed {seed})"].fitness
                                     - start.fitness)
    assert not any(name.startswith("CMA-ES start") for name in result.comparisons)


@pytest.mark.slow
def test_a_finished_problem_is_read_back_not_run_again(tiny_bench, monkeypatch):
    out, result, _ = tiny_bench

    def refuse(*_, **__):
        raise AssertionError("searched again")

    monkeypatch.setattr(bench, "searched", refuse)
    again = bench.run_benchmark(["tiny-specialists"], out, out, seeds=(0, 1), trials=6)
    assert again[0] == result
    report = (out / "quality.md").read_text()
    assert "| against | seed 0 | seed 1 | mean [95% CI], p |" in report
    assert (out / "quality.png").stat().st_size > 10_000


@pytest.mark.slow
def test_the_specialist_check_says_invalid_under_the_share(tiny_bench):
    """A reference whose father scores shift / 0.8 on its skill: this father reaches 0.8x
    of it, under 0.9x (invalid); against shift / 0.95, 0.95x (valid)."""
    _, result, _ = tiny_bench
    shift = result.models["father"].scores["shift"]
    assert shift > 0.5

    def reference(score):
        father = result.models["father"]
        return result.model_copy(update={"models": {**result.models, "father": father.model_copy(
            update={"scores": {**father.scores, "shift": score}})}})

    assert "INVALID" in specialist_check(result, reference(shift / 0.8), {"father": "shift"}, 0.9)
    line = specialist_check(result, reference(shift / 0.95), {"father": "shift"}, 0.9)
    assert "INVALID" not in line and "(0.95x)" in line


@pytest.mark.slow
def test_under_genome_rule_v3_every_seed_starts_from_the_baselines_tuned_once(
        two_skill_pair, tmp_path, monkeypatch):
    """`--genome-rule v3`: the grid is scored in the first seed only, and the second seed's
    search still queues the chosen tuned points first (read back from the shared points)."""
    import optuna

    from darwin_merge.evolve import baselines

    scored = []
    score_point = baselines.score_point
    monkeypatch.setattr(baselines, "score_point", lambda scorer, point, *a, **k: (
        scored.append(point.name), score_point(scorer, point, *a, **k))[1])
    cache = two_skill_pair[0].parents[2]
    bench.run_benchmark(["tiny-specialists"], tmp_path, cache, seeds=(0, 1), trials=6,
                        genome_rule="v3")
    assert len(scored) == len(set(scored)) == sum(map(len, baselines.tuning_grid().values()))
    storage = f"sqlite:///{tmp_path / 'tiny-specialists' / 'seed-1' / 'study.db'}"
    study = optuna.load_study(study_name=None, storage=storage)
    sources = [t.user_attrs.get("source") for t in study.trials]
    assert sources[0] == "tuned_baseline"
    assert study.user_attrs[baselines.POINTS_ATTR].keys() == set(scored)
