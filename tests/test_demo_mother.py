"""The demo's arithmetic mother: data, answer-only loss, determinism, cached folder."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import random
import re
from pathlib import Path

import pytest
import torch

from darwin_merge.errors import UsageError
from darwin_merge.io.loading import load_model, load_tokenizer
from darwin_merge.records import file_names
from darwin_recipes.demo import mother as m

PROBLEM = re.compile(r"^(\d+)( ([-+*]) \d+)+ =$")
# A tiny version of the recipe: two steps on the top two blocks (seconds, not minutes).
TINY = m.MotherRecipe(seed=7, steps=2, batch_size=4, warmup_steps=1, first_trained_layer=28)


def test_problems_follow_the_evaluation_format():
    rng = random.Random(0)
    for _ in range(300):
        context, answer = m.arithmetic_problem(rng)
        match = PROBLEM.match(context)
        assert match, context
        assert len({op for op in re.findall(r" ([-+*]) ", context)}) == 1
        assert int(answer) == eval(context[:-2])  # noqa: S307 - digits and + - * only
        assert answer.startswith(" ") and not answer.startswith("  ")
    counts = {m.arithmetic_problem(rng, max_operands=2)[0].count(" ") for _ in range(100)}
    assert counts == {3}  # "a op b =": two operands only


def shipped_as_generated(name: str) -> bool:
    """Whether the skill's shipped task file is exactly what scripts/make-skill-task.py
    writes (the product's own data)."""
    script = Path(__file__).resolve().parents[1] / "scripts" / "make-skill-task.py"
    spec = importlib.util.spec_from_file_location("make_skill_task", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    shipped = (module.TASKS / m.SKILLS[name].file).read_text(encoding="utf-8")
    return shipped == "".join(json.dumps(r) + "\n" for r in module.task_rows(name))


def test_two_digit_skill_matches_its_shipped_task():
    skill = m.SKILLS["two_digit_arithmetic"]
    rng = random.Random(1)
    problems = [m.arithmetic_problem(rng, 5, skill) for _ in range(500)]
    for context, answer in problems:
        a, op, b, eq = context.split(" ")
        assert op in "+-" and eq == "=" and 1 <= int(a) <= 99 and 1 <= int(b) <= 99
        assert int(answer) == (int(a) + int(b) if op == "+" else int(a) - int(b))
    assert {c.split(" ")[1] for c, _ in problems} == {"+", "-"}
    # the shipped file has the same format, and training never sees one of its contexts
    evaluation = m.evaluation_contexts(skill=skill)
    assert len(evaluation) == 1000
    assert all(re.fullmatch(r"\d{1,2} [-+] \d{1,2} =", c) for c in evaluation)
    training = m.training_problems(5, 3000, evaluation, skill=skill)
    assert not {c for c, _ in training} & evaluation
    assert shipped_as_generated("two_digit_arithmetic")
    with pytest.raises(UsageError, match="unknown mother skill"):
        m.recipe_with(skill="poetry")


@pytest.mark.parametrize("name, pattern, order", [
    ("letter_reversal", r"reverse: ((?:[a-z] ){3,5}[a-z]) =", lambda s: list(reversed(s))),
    ("digit_sorting", r"sort: ((?:\d ){3,5}\d) =", sorted)])
def test_reordering_problems_and_their_shipped_task(name, pattern, order):
    """Distinct symbols written back reversed or sorted; the shipped task file is what its
    generator script writes, loads with both splits, and no training problem repeats it."""
    from darwin_merge.eval.tasks import resolve_tasks, select_items

    skill = m.SKILLS[name]
    rng = random.Random(2)
    for _ in range(300):
        context, answer = skill.problem(rng)
        match = re.fullmatch(pattern, context)
        assert match, context
        symbols = match.group(1).split(" ")
        assert len(set(symbols)) == len(symbols)  # distinct: the order is unambiguous
        assert answer == " " + " ".join(order(symbols))
    assert shipped_as_generated(name)
    task = resolve_tasks([name])[0]
    search, holdout = select_items(task, "search"), select_items(task, "holdout")
    assert len(search) + len(holdout) == 1000 and search and holdout
    evaluation = m.evaluation_contexts(skill=skill)
    training = m.training_problems(5, 3000, evaluation, skill=skill)
    assert len(evaluation) == 1000 and not {c for c, _ in training} & evaluation


def test_training_data_is_seeded_and_excludes_the_evaluation_items():
    evaluation = m.evaluation_contexts()  # simple_arithmetic's file
    assert len(evaluation) >= 990  # the shipped file: 1000 items, 998 distinct contexts
    first = m.training_problems(3, 2000, evaluation)
    assert first == m.training_problems(3, 2000, evaluation)
    assert first != m.training_problems(4, 2000, evaluation)
    assert not {c for c, _ in first} & evaluation
    # an excluded context is skipped, the rest keep their order
    plain = m.training_problems(3, 50, set())
    skipped = m.training_problems(3, 49, {plain[10][0]})
    assert skipped == plain[:10] + plain[11:]


def test_length_batches_keep_every_example_once():
    examples = [([1] * (i % 17 + 3), [m.IGNORE]) for i in range(100)]
    batches = m.length_batches(examples, 8, seed=1, window=4)
    assert sorted(len(e[0]) for b in batches for e in b) == sorted(len(e[0]) for e in examples)
    assert all(len(b) <= 8 for b in batches)
    assert batches == m.length_batches(examples, 8, seed=1, window=4)


def test_recipe_changes_are_checked():
    assert m.recipe_with(steps=5, lr=None).steps == 5
    assert m.recipe_with(lr=None) == m.MotherRecipe()
    with pytest.raises(UsageError):
        m.recipe_with(steps=0)
    with pytest.raises(UsageError):
        m.recipe_with(max_operands=1)
    assert TINY.hash8(m.Path("a")) != m.recipe_with(steps=3).hash8(m.Path("a"))
    assert TINY.hash8(m.Path("a")) == m.MotherRecipe(**{**TINY.key(), "threads": 2}).hash8(
        m.Path("a"))
    # The cached folders named in docs/DEMO.md keep their names: a field added later with
    # its default left out of the hash does not rename them.
    father = m.Path("smollm2-135m-instruct")
    published = m.MotherRecipe(autocast_bf16=True)  # made on a CPU with native bfloat16
    assert published.hash8(father) == "3282c7a4"
    assert dataclasses.replace(published, last_trained_layer=29).hash8(father) != "3282c7a4"
    # elsewhere the recipe trains in float32, cached under another name
    fast = bool(m.cpu_has_fast_bfloat16())
    assert m.MotherRecipe().autocast_bf16 == fast
    assert (m.MotherRecipe().hash8(father) == "3282c7a4") == fast


@pytest.mark.real
def test_only_the_answer_is_learned(smollm2):
    tokenizer = load_tokenizer(smollm2)
    ids, labels = m.encode_example(tokenizer, "25 - 759 =", " -734")
    answer = [t for t in labels if t != m.IGNORE]
    assert tokenizer.decode(answer) == " -734"
    assert labels[: len(ids) - len(answer)] == [m.IGNORE] * (len(ids) - len(answer))
    assert ids[len(ids) - len(answer):] == answer
    assert tokenizer.decode(ids) == "25 - 759 = -734"
    # the answer-only loss equals transformers' own shifted loss over the full logits
    model = load_model(smollm2)
    batch = [m.encode_example(tokenizer, c, a) for c, a in [("25 - 759 =", " -734"),
                                                              ("17 * 94 =", " 1598")]]
    input_ids, label_ids = m.collate(batch, tokenizer.pad_token_id)
    with torch.no_grad():
        ours = m.answer_loss(model, input_ids, label_ids)
        reference = model(input_ids=input_ids, labels=label_ids).loss
    assert torch.allclose(ours, reference, atol=1e-5), (ours, reference)


def _trained_state(folder, recipe, optimizer_threads=None):
    tokenizer, model = load_tokenizer(folder), load_model(folder)
    numbers = m.train(model, tokenizer, recipe, set(), torch.device("cpu"), progress=False,
                      optimizer_threads=optimizer_threads)
    return numbers, {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.real
@pytest.mark.slow
def test_training_is_deterministic_and_touches_only_what_it_trains(smollm2):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(1234)
    caller = torch.random.get_rng_state()
    try:
        numbers, first = _trained_state(smollm2, TINY)
        # seeded inside, the caller's random state left as it was
        assert torch.equal(torch.random.get_rng_state(), caller)
        # the optimizer's step on two threads: the same weights, bit for bit (the embedding
        # table, 28M values, is split between the threads)
        _, second = _trained_state(smollm2, TINY, optimizer_threads=2)
    finally:
        torch.set_num_threads(threads)
    father = load_model(smollm2).state_dict()
    assert numbers["problems"] == TINY.steps * TINY.batch_size
    for name, tensor in first.items():
        assert torch.equal(tensor, second[name]), name
        layer = m._layer_of(name)
        trained = layer is not None and layer >= TINY.first_trained_layer
        # the token embeddings are trained too (tied: lm_head is the same tensor)
        trained = trained or name in ("model.embed_tokens.weight", "lm_head.weight")
        assert torch.equal(tensor, father[name]) != trained, name


@pytest.mark.real
@pytest.mark.slow
def test_the_mother_folder_is_written_once_and_loads(smollm2, tmp_path, monkeypatch):
    threads = torch.get_num_threads()
    monkeypatch.setattr(torch, "set_num_threads", _recording(torch.set_num_threads, seen := []))
    folder = m.prepare_mother(smollm2, tmp_path, TINY, progress=False)
    # one thread to train, the caller's for each optimizer step, then the caller's again
    assert seen == [TINY.threads] + [threads, TINY.threads] * TINY.steps + [threads]
    assert folder == tmp_path / "models" / f"{smollm2.name}-arith-{TINY.hash8(smollm2)}"
    record = json.loads((folder / file_names.FINE_TUNE_RECORD).read_text())
    assert record["recipe"] == TINY.key() and record["tokens"] > 0
    assert (folder / "chat_template.jinja").is_file() and (folder / "tokenizer.json").is_file()
    model, father = load_model(folder), load_model(smollm2)
    top = "model.layers.29.mlp.down_proj.weight"
    assert not torch.equal(model.state_dict()[top], father.state_dict()[top])
    low = "model.layers.3.mlp.down_proj.weight"
    assert torch.equal(model.state_dict()[low], father.state_dict()[low])

    def no_training(*args, **kwargs):
        raise AssertionError("the cached mother was trained again")

    monkeypatch.setattr(m, "train", no_training)
    assert m.prepare_mother(smollm2, tmp_path, TINY, progress=False) == folder


@pytest.mark.real
@pytest.mark.slow
def test_the_training_bar_names_the_skill_not_a_role(smollm2, capfd):
    """The specialists pair trains its father with this code too: the progress line says
    which skill is learnt ("fine-tuning on letter_reversal"), not "the mother"."""
    recipe = m.recipe_with(skill="letter_reversal", steps=2, batch_size=4, warmup_steps=1,
                           first_trained_layer=28)
    m.train(load_model(smollm2), load_tokenizer(smollm2), recipe, set(), torch.device("cpu"))
    err = capfd.readouterr().err
    assert "fine-tuning on letter_reversal" in err and "mother" not in err

def _recording(function, calls: list):
    def wrapper(value):
        calls.append(value)
        return function(value)

    return wrapper


def test_select_trainable_blocks_and_embeddings(tiny_llama):
    model = load_model(tiny_llama)
    n_layers = model.config.num_hidden_layers
    blocks_only = m.select_trainable(model, n_layers - 1)
    assert blocks_only and all(f"layers.{n_layers - 1}." in n for n in blocks_only)
    assert not model.get_input_embeddings().weight.requires_grad
    with_embeddings = m.select_trainable(model, n_layers - 1, embeddings=True)
    assert set(with_embeddings) - set(blocks_only) == {"model.embed_tokens.weight"}
    assert model.get_input_embeddings().weight.requires_grad
    with pytest.raises(UsageError, match="not a range"):
        m.select_trainable(model, n_layers)
    lowest = m.select_trainable(model, 0, last_layer=0)
    assert lowest and all(m._layer_of(n) == 0 for n in lowest)
    with pytest.raises(UsageError, match="not a range"):
        m.select_trainable(model, 1, last_layer=0)


@pytest.mark.parametrize("family,layers", [("smollm2", 30), ("gemma3", 18)])
def test_specialists_pair_is_two_fine_tunes_of_one_base(monkeypatch, tmp_path, family, layers):
    from darwin_recipes.demo import run as demo_run

    base = tmp_path / "models" / "base"
    monkeypatch.setattr(demo_run, "ensure_real_model", lambda family, cache: base)
    monkeypatch.setattr(demo_run, "prepare_mother", lambda father, cache, recipe, device:
                        m.mother_folder(father, cache, recipe))
    parents = demo_run.specialist_parents(family, tmp_path, "cpu")
    assert parents["base"] == base
    # both specialists are fine-tunes of the base, each on one fitness skill
    assert parents["father"].name.startswith("base-arith-")
    assert parents["mother"].name.startswith("base-rev-")
    # ... on the two halves of the family's blocks, the embeddings frozen in both
    father, mother = (demo_run.SPECIALIST_RECIPES[family][p] for p in ("father", "mother"))
    assert (father.first_trained_layer, father.last_trained_layer) == (0, layers // 2 - 1)
    assert (mother.first_trained_layer, mother.last_trained_layer) == (layers // 2, None)
    assert not father.train_embeddings and not mother.train_embeddings
    skills = {m.skill_of(r.skill).task for r in (father, mother)}
    assert skills == set(parents["fitness"])
    assert set(parents["guard"]) == {"arc_easy", "lambada_openai"}
    # the default pair: its run folder is the family's; the other pair's is named
    assert demo_run.default_out(family, "specialists").name == f"demo-{family}"
    assert demo_run.default_out(family, "father-mother").name == f"demo-{family}-father-mother"
