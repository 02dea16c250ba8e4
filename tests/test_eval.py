"""Evaluation: log-likelihood paths agree, lm-eval's metrics, answer extraction, splits, CLI."""

from __future__ import annotations

import json
import math
import statistics

import pytest
import torch

from darwin_merge.cli import main
from darwin_merge.errors import RecordError, UsageError
from darwin_merge.eval import evaluate, item_split, registry, select_items
from darwin_merge.eval.evaluator import generative_metrics, multiple_choice_metrics
from darwin_merge.eval.loglik import Score, encode_groups, score_groups, score_unbatched
from darwin_merge.eval.metrics import (
    extract_letter,
    extract_number,
    gsm8k_gold,
    majority_vote,
    mean_stderr,
)
from darwin_merge.eval.results import TaskResult, TaskScore
from darwin_merge.eval.tasks import resolve_tasks, task_metric
from tiny_models import build_model, char_tokenizer

REQUESTS = [
    ("Question: what colour is the sky on a clear summer day, seen from a field?\nAnswer:",
     [" blue", " green and red", " x"]),
    ("Short", [" a", " bb"]),
    ("", [" hello there"]),
    ("Trailing space moves to the continuation ", ["word", "other words"]),
    ("Another, much longer context that goes well past the sliding window of sixteen\nAnswer:",
     [" yes", " no way at all", " maybe", " q"]),
]


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma4", "gemma4_moe"])
def test_batched_prefix_shared_matches_unbatched(family):
    model, tok = build_model(family), char_tokenizer()
    groups = encode_groups(tok, REQUESTS)
    reference = [[score_unbatched(model, g.context, c) for c in g.continuations] for g in groups]
    for batch_size in (1, 3, 64):
        got = score_groups(model, groups, batch_size=batch_size)
        for g_ref, g_got in zip(reference, got, strict=True):
            for ref, s in zip(g_ref, g_got, strict=True):
                assert s.n_tokens == ref.n_tokens
                assert s.is_greedy == ref.is_greedy
                assert s.logprob == pytest.approx(ref.logprob, abs=1e-4), (family, batch_size)


def test_length_chunks_split_where_padding_costs_more_than_a_pass():
    from darwin_merge.eval.loglik import _length_chunks

    lengths = [1, 10, 1, 9, 1, 1]
    chunks = _length_chunks(range(6), lengths, pass_cost=4)
    assert chunks == [[1, 3], [0, 2, 4, 5]]  # long ones together, short ones together
    assert _length_chunks(range(6), lengths, pass_cost=1000) == [[1, 3, 0, 2, 4, 5]]
    assert sorted(r for c in _length_chunks(range(6), lengths) for r in c) == list(range(6))


BPE_VOCAB = {"<s>": 0, "</s>": 1, "a": 2, "b": 3, "c": 4, "d": 5, " ": 6, "bc": 7, "ab": 8}


def bpe_tokenizer(with_bos: bool):
    """A real BPE whose merges cross the context/continuation boundary: "ab" alone is
    [ab], but "abc" is [a, bc] (the b+c merge ranks first). With `with_bos` it adds <s>
    by default, as Gemma's does."""
    from tokenizers import Tokenizer, models, processors
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE(vocab=BPE_VOCAB, merges=[("b", "c"), ("a", "b")]))
    if with_bos:
        core.post_processor = processors.TemplateProcessing(single="<s> $A",
                                                            special_tokens=[("<s>", 0)])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>")


@pytest.mark.parametrize("with_bos", [False, True])
def test_encoding_splits_like_lm_eval(with_bos):
    """lm-eval's split: the continuation is the whole text's tokens after the context's
    (here [bc], not the [c] of encoding "c" alone); a context's trailing space moves to
    the continuation; a tokenizer that adds BOS gets it before every context."""
    tok = bpe_tokenizer(with_bos)
    bos = (0,) if with_bos else ()
    groups = encode_groups(tok, [("ab", ["c", "d"]), ("ab ", ["d"]), ("", ["bc"])])
    assert tok("c", add_special_tokens=False)["input_ids"] == [4]
    assert groups[0].context == bos + (8,) and groups[0].continuations == ((7,), (5,))
    assert groups[1].context == bos + (8,) and groups[1].continuations == ((6, 5),)
    assert groups[2].context == (0,) and groups[2].continuations == ((7,),)  # from <s>


def test_gemma4_multimodal_scores_text_like_its_text_only_path():
    model, tok = build_model("gemma4"), char_tokenizer()
    assert type(model).__name__ == "Gemma4ForConditionalGeneration"
    groups = encode_groups(tok, REQUESTS)
    got = score_groups(model, groups, batch_size=16)
    softcap = model.config.get_text_config().final_logit_softcapping
    with torch.inference_mode():
        for group, scores in zip(groups, got, strict=True):
            for cont, score in zip(group.continuations, scores, strict=True):
                ids = torch.tensor([group.context + cont])
                hidden = model.model.language_model(input_ids=ids).last_hidden_state
                logits = model.lm_head(hidden)
                if softcap:
                    logits = torch.tanh(logits / softcap) * softcap
                logp = logits[0].float().log_softmax(-1)
                start = len(group.context) - 1
                expected = sum(float(logp[start + j, t]) for j, t in enumerate(cont))
                assert score.logprob == pytest.approx(expected, abs=1e-4)


def test_acc_norm_flips_the_choice_by_length():
    doc = {"query": "Question: q", "choices": ["a", "bbbbbbbb"], "gold": 1}
    # summed: -2 > -8 picks "a"; per character: -2/1 = -2 < -8/8 = -1 picks "bbbbbbbb"
    scores = [[Score(-2.0, 1, False), Score(-8.0, 3, False)]]
    result = multiple_choice_metrics([doc], scores)
    assert result["acc"] == 0.0 and result["acc_norm"] == 1.0
    assert result["mean_gold_logprob"] == pytest.approx(-1.0)


def test_stderr_is_the_sample_stderr_of_the_mean():
    values = [1.0, 0.0, 1.0, 1.0, 0.0]
    assert mean_stderr(values) == pytest.approx(statistics.stdev(values) / math.sqrt(5))
    assert mean_stderr([1.0]) is None


def test_ties_go_to_the_first_choice():
    doc = {"query": "q", "choices": ["aa", "bb"], "gold": 0}
    result = multiple_choice_metrics([doc], [[Score(-1.0, 1, False), Score(-1.0, 1, False)]])
    assert result["acc"] == 1.0 and result["acc_norm"] == 1.0


@pytest.mark.parametrize("text, expected", [
    ("48 + 24 = 72. The answer is 72.", "72"),
    ("She pays $1,250 in total.\n#### 1,250", "1250"),
    ("First 3 then 5, so 8", "8"),
    ("<think>maybe 41 or 40</think>The answer is 42", "42"),
    ("The answer is -3.50", "-3.5"),
    ("I do not know", None),
])
def test_extract_number(text, expected):
    assert extract_number(text) == expected


def test_gsm8k_gold():
    assert gsm8k_gold("so 3 + 4 = 7\n#### 7") == "7"
    assert gsm8k_gold("no marker") is None


@pytest.mark.parametrize("text, expected", [
    ("The answer is C.", "C"),
    ("B) because plants need light", "B"),
    ("answer: (d)", "D"),
    ("D", "D"),
    ("<think>A looks wrong</think>B", "B"),
    ("I think it is E", None),  # E is not an option among four
    ("none of them", None),
])
def test_extract_letter(text, expected):
    assert extract_letter(text, 4) == expected


def test_majority_vote_ties_and_unparsed():
    assert majority_vote(["3", "4", "4", None]) == "4"
    assert majority_vote(["5", "6", "6", "5"]) == "5"  # a tie goes to the answer seen first
    assert majority_vote([None, "7", None]) == "7"  # unparsed answers do not vote
    assert majority_vote([None, None]) is None


def test_generative_metrics_first_sample_and_maj_at_k():
    answers = [["1", "2", "2"], [None, "5", "5"], ["9", None, None]]
    result = generative_metrics(answers, ["2", "5", "9"], samples=3)
    assert result["exact_match"] == pytest.approx(1 / 3)  # only the third item's first sample
    assert result["maj@3"] == pytest.approx(1.0)
    assert result["unparsed"] == 1


def test_splits_are_disjoint_stable_and_about_half():
    task = registry()["arc_easy"]
    search = select_items(task, "search")
    holdout = select_items(task, "holdout")
    everything = select_items(task, "all")
    ids_s, ids_h = {it.id for it in search}, {it.id for it in holdout}
    assert not ids_s & ids_h and ids_s | ids_h == {it.id for it in everything}
    assert 0.45 < len(search) / len(everything) < 0.55
    doc = dict(everything[0].doc)
    reordered = dict(reversed(list(doc.items())))
    assert item_split(reordered) == item_split(doc) == everything[0].split
    first = select_items(task, "holdout", limit=5)
    assert [it.id for it in first] == [it.id for it in holdout[:5]]
    assert [it.id for it in first] == sorted(it.id for it in first)


def test_every_shipped_task_loads():
    for name, task in registry().items():
        assert select_items(task, "all", limit=3), name


def test_evaluate_in_memory_with_a_user_task(tmp_path):
    task_file = tmp_path / "mine.jsonl"
    rows = [{"query": f"Question: {i} plus one?", "choices": [str(i + 1), "x", "yy"], "gold": 0}
            for i in range(6)]
    task_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    model, tok = build_model("llama"), char_tokenizer()
    model.train()
    res = evaluate(model, tok, ["copa", "lambada_openai", "simple_arithmetic"], limit=4,
                   task_file=task_file, batch_size=8)
    assert model.training  # the caller's mode is restored
    assert set(res) == {"copa", "lambada_openai", "simple_arithmetic", "mine"}
    assert res["mine"].n == 4 and res["mine"].item_ids == list(range(4))
    # pinned for this seeded tiny model: 3 of the 4 user items right; stderr
    # sqrt(p(1-p)/(n-1)) as lm-eval's; another gold answer would change both
    assert res["mine"].primary == 0.75 and res["mine"].primary_stderr == pytest.approx(0.25)
    assert math.isfinite(res["mine"].mean_gold_logprob) and res["mine"].mean_gold_logprob < 0
    assert res["lambada_openai"].metrics["perplexity"] > 1.0
    assert res["copa"].n == 4 and "acc_norm" in res["copa"].metrics


def test_sampled_generations_come_from_the_seed_and_leave_the_callers_generator_alone():
    """maj@K's samples depend on `seed` only, the same samples as when generate seeded the
    global generator and left it so (taken from the code at 1e4db6e), whatever the caller
    drew before; the caller's generator state is its own again after the call."""
    from darwin_merge.eval.generate import generate

    model, tok = build_model("llama"), char_tokenizer()
    torch.manual_seed(123)
    torch.rand(5)  # the caller's own draws before the call
    before = torch.get_rng_state()
    samples = generate(model, tok, ["1+1=", "say hi"], samples=3, max_new_tokens=6, seed=7)
    assert samples == [["e T 5 M B", "( a \\ f M [", "V \\ V ? #"],
                       ["= @ ; }", "' } Z ) 1", "u w"]]
    assert torch.equal(torch.get_rng_state(), before)


def test_evaluate_generative_tiny(tmp_path):
    model, tok = build_model("llama"), char_tokenizer()
    res = evaluate(model, tok, ["gsm8k", "copa_gen"], limit=2, samples=2, batch_size=4,
                   max_new_tokens=6)
    for name in ("gsm8k", "copa_gen"):
        assert res[name].n == 2 and "maj@2" in res[name].metrics
        assert res[name].generation["first_generation"] == "2 W 9 l >"  # seeded, greedy
        assert res[name].metric == "maj@2" and len(res[name].item_scores) == 2
    # its digits parse as a GSM8K answer (wrong); it names no choice letter for COPA
    assert res["gsm8k"].generation["unparsed"] == 0
    assert res["gsm8k"].metrics["exact_match"] == 0.0
    assert res["copa_gen"].generation["unparsed"] == 2


def test_each_result_names_its_primary_metric_and_scores_each_item():
    model, tok = build_model("llama"), char_tokenizer()
    res = evaluate(model, tok, ["copa", "lambada_openai", "gsm8k"], limit=3, batch_size=4,
                   max_new_tokens=4)
    assert {t: r.metric for t, r in res.items()} == {
        "copa": "acc", "lambada_openai": "acc", "gsm8k": "exact_match"}
    for result in res.values():
        scores = result.item_scores
        assert len(scores) == len(result.item_ids) == 3 and set(scores) <= {0.0, 1.0}
        assert result.primary == pytest.approx(sum(scores) / 3)
        assert result.higher_is_better is True


def test_a_stored_result_reads_back_as_the_same_result():
    """The flat rows a run stores (the holdout table, the study's scores) read back as the
    evaluator's results; a row without its primary metric is a one-line RecordError."""
    model, tok = build_model("llama"), char_tokenizer()
    res = evaluate(model, tok, ["copa", "lambada_openai", "gsm8k"], limit=3, batch_size=4,
                   samples=2, max_new_tokens=4)
    for task, result in res.items():
        assert TaskResult.from_row(result.stored()) == result
        row = result.row()
        assert "item_scores" not in row and row[result.metric] == result.primary
        summary = result.summary()
        assert set(summary.metrics) == {result.metric, f"{result.metric}_stderr"}
        assert TaskScore.from_row(row).summary() == summary == TaskScore.from_row(summary.row())
        broken = {k: v for k, v in row.items() if k != result.metric}
        with pytest.raises(RecordError, match=f"primary metric '{result.metric}'"):
            TaskScore.from_row(broken, task)
    assert res["gsm8k"].generation["samples"] == 2 and "samples" not in res["gsm8k"].metrics


def test_a_lower_is_better_primary_ranks_the_smaller_value_first():
    """A task whose primary metric falls as the model improves (a perplexity): the search's
    fitness and a guard's verdict rank the smaller value higher."""
    from darwin_merge.evolve.scoring import fitness_of, guard_verdicts

    worse = TaskScore(metric="perplexity", higher_is_better=False, n=10,
                      metrics={"perplexity": 12.0})
    better = worse.model_copy(update={"metrics": {"perplexity": 8.0}})
    assert worse.primary == 12.0
    assert fitness_of({"t": better}, {"t": 1.0}) > fitness_of({"t": worse}, {"t": 1.0})
    verdicts = guard_verdicts({"t": worse}, {"t": 1.0}, {"base": {"t": better}})
    assert verdicts["t"]["within"] is False  # 4 perplexity points above the base's


def test_task_metrics_come_from_tasks_yaml():
    assert task_metric("arc_easy") == ("acc", True)
    assert task_metric("gsm8k") == ("exact_match", True)
    assert registry()["gsm8k"].primary(samples=8) == "maj@8"
    assert registry()["arc_easy"].primary(samples=8) == "acc"


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(UsageError, match="known tasks: .*arc_easy.*piqa"):
        resolve_tasks("arc_easy,nope")


def test_malformed_task_file_names_the_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    good = json.dumps({"query": "Question: q", "choices": ["a", "b"], "gold": 0})
    bad.write_text(good + "\n" + good + "\n{not json\n")
    with pytest.raises(UsageError, match="line 3"):
        resolve_tasks([], bad)
    bad.write_text(good + "\n" + json.dumps({"query": "q", "choices": ["a", "b"], "gold": 5}))
    with pytest.raises(UsageError, match="line 2.*gold"):
        resolve_tasks([], bad)


def test_limit_zero_is_refused():
    with pytest.raises(UsageError, match="--limit"):
        select_items(registry()["copa"], "all", 0)


def test_cli_bad_inputs_exit_nonzero(tmp_path, capsys):
    assert main(["eval", str(tmp_path), "--tasks", "nope"]) == UsageError.exit_code
    assert "known tasks" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing"), "--tasks", "copa"]) != 0
    err = capsys.readouterr().err
    assert "error" in err and len(err.strip().splitlines()) == 1
    assert main(["eval", str(tmp_path), "--tasks", "copa", "--limit", "0"]) == 2


def test_cli_writes_results(tiny_llama, tmp_path, capsys):
    out = tmp_path / "results.json"
    code = main(["eval", str(tiny_llama), "--tasks", "copa", "--limit", "3", "--split",
                 "holdout", "--out", str(out)])
    assert code == 0
    record = json.loads(out.read_text())  # lm-eval's layout (tests/test_lm_eval_layout.py)
    assert record["n-samples"]["copa"]["effective"] == 3 and record["config"]["split"] == "holdout"
    assert len(record["darwin"]["config_sha256"]) == 64 and record["darwin"]["darwin_version"]
    assert "acc_norm" in capsys.readouterr().out


def test_bfloat16_scores_close_to_float32():
    model, tok = build_model("gemma3"), char_tokenizer()
    groups = encode_groups(tok, REQUESTS)
    full = score_groups(model, groups, batch_size=8)
    half = score_groups(model.to(torch.bfloat16), groups, batch_size=8)
    for g_full, g_half in zip(full, half, strict=True):
        for a, b in zip(g_full, g_half, strict=True):
            assert math.isfinite(b.logprob)
            assert b.logprob == pytest.approx(a.logprob, abs=0.1 * a.n_tokens)
