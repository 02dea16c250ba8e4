"""The tiny demo's parents: a two-skill trio of 2-layer Llama models trained in seconds.

`prepare_tiny_pair(cache)` returns (and first writes, cached) a folder with three models that
share one ancestor, and the demo's task files:
- base: trained briefly to copy short strings of letters or digits (`C abc=abc`,
  `C 307=307`), so it knows the format;
- father: the base fine-tuned on one skill, shifting each letter by one (`S abc=bcd`);
- mother: the base fine-tuned on another, mirroring each digit (`M 307=692`, 9 - d);
- tasks/shift.jsonl, tasks/mirror.jsonl, tasks/copy.jsonl: greedy-continuation task files
  (the format of the shipped `two_digit_arithmetic`) of 200 words per task that no model was
  trained on; the evaluator splits them into search and holdout items as any task file.
`write_probe_files` writes probe sets of the trio's own text (`darwin health --probes`).
The skills touch different tokens, as two fine-tunes on different domains would, and each
specialist changed one layer only, so a merge with per-layer ratios can keep both while a
uniform ratio dilutes both. The tests build the same trio (tests/conftest.py).

The models use a character-level tokenizer (one token per character, `<bos>` written in
the task contexts); everything is seeded and trained on one CPU thread.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
import string
import time
from pathlib import Path

import torch

from darwin_merge.io import ModelWriter, atomic_output_dir
from darwin_merge.merge.execute import cpu_threads
from darwin_merge.records import file_names

# -- the tokenizer and the model ------------------------------------------------------------
VOCAB_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
SPECIALS = ["<pad>", "<bos>", "<eos>", "<unk>"]
VOCAB_SIZE = 128  # >= len(SPECIALS) + len(VOCAB_CHARS) (= 100)
CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<assistant>{% endif %}"
)


def char_tokenizer():
    """A character-level fast tokenizer: one token per character, ids 0..99."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + list(VOCAB_CHARS))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def text_config_fields(n_layers: int) -> dict:
    """The sizes every tiny model shares (hidden 64, 2 heads, the char vocabulary)."""
    return dict(vocab_size=VOCAB_SIZE, hidden_size=64, intermediate_size=128,
                num_hidden_layers=n_layers, num_attention_heads=2, num_key_value_heads=1,
                head_dim=32, pad_token_id=0, bos_token_id=1, eos_token_id=2)


def llama_config(n_layers: int = 4):
    from transformers import LlamaConfig

    return LlamaConfig(**text_config_fields(n_layers), max_position_embeddings=256,
                       tie_word_embeddings=True)


def build_llama(seed: int = 0, n_layers: int = 2):
    """A random tiny Llama, the same for a seed (the caller's torch RNG is left as it was)."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(llama_config(n_layers))
    return model.eval()


def write_tiny_model(model, folder: Path, description: str) -> Path:
    """A model folder: safetensors (the tied output head left out), config, char tokenizer
    and a README (licence and what the model learnt, which the child's card quotes)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    writer = ModelWriter(folder)
    for name, tensor in model.state_dict().items():
        if not (name == "lm_head.weight" and model.config.tie_word_embeddings):
            writer.add(name, tensor)
    writer.finish()
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    (folder / file_names.CARD).write_text(
        f"---\nlicense: apache-2.0\n---\n# Darwin's tiny demo: {folder.name}\n\n"
        f"A 2-layer Llama with a character tokenizer, {description} "
        "(darwin_recipes/demo/tiny.py).\n", encoding="utf-8")
    return folder


# -- the skills -------------------------------------------------------------------------------
LETTERS = "abcdefghijkl"
DIGITS = "0123456789"
WORD = 3
BOS, EOS = SPECIALS.index("<bos>"), SPECIALS.index("<eos>")
TASKS = {"copy": "C", "skill_a": "S", "skill_b": "M"}  # skill_a: shift, skill_b: mirror
HELD_OUT = 200  # words per task never trained on: the task files


def answer(task: str, word: str) -> str:
    """The right answer of a task for a word."""
    if task == "copy":
        return word
    if task == "skill_a":
        return "".join(LETTERS[(LETTERS.index(c) + 1) % len(LETTERS)] for c in word)
    return "".join(str(9 - int(c)) for c in word)


def split_words(task: str) -> tuple[list[str], list[str]]:
    """(training words, held-out words): all 3-char words of the task's alphabet, shuffled
    once; HELD_OUT of them are never trained on."""
    alphabets = {"skill_a": LETTERS, "skill_b": DIGITS, "copy": LETTERS + DIGITS}
    words = ["".join(w) for w in itertools.product(alphabets[task], repeat=WORD)]
    if task == "copy":
        words = [w for w in words if w.isalpha() or w.isdigit()]
    random.Random(0).shuffle(words)
    return words[HELD_OUT:], words[:HELD_OUT]


def encode(text: str) -> list[int]:
    """Char ids exactly as the char tokenizer assigns them."""
    return [len(SPECIALS) + VOCAB_CHARS.index(c) for c in text]


def prompt_text(task: str, word: str) -> str:
    """What the model reads before the answer: `S abc=` (after <bos>)."""
    return f"{TASKS[task]} {word}="


def prompt_ids(task: str, word: str) -> list[int]:
    return [BOS] + encode(prompt_text(task, word))


def _batch(task: str, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and labels; the loss is on the answer (and its end) only."""
    ids, labels = [], []
    for word in words:
        prompt = prompt_ids(task, word)
        full = prompt + encode(answer(task, word)) + [EOS]
        ids.append(full)
        labels.append([-100] * len(prompt) + full[len(prompt):])
    return torch.tensor(ids), torch.tensor(labels)


def generic_text(rng: random.Random, count: int = 32, length: int = 9) -> torch.Tensor:
    """`count` random strings of the skills' characters (letters, digits, the task letters,
    space and `=`), after <bos>: general text a fine-tune should leave as the base reads it."""
    chars = LETTERS + DIGITS + "".join(TASKS.values()) + " ="
    return torch.tensor([[BOS] + encode("".join(rng.choice(chars) for _ in range(length)))
                         for _ in range(count)])


def train(model, task: str, steps: int, lr: float, seed: int, batch: int = 32,
          only: str | None = None, keep: tuple | None = None):
    """A few AdamW steps on one task (in place on `model`, which the caller owns).

    `only`: train just the parameters whose name contains it (e.g. "layers.1.").
    `keep` = (reference model, layer, weight): add `weight` x the mean squared difference
    between the model's and the reference's hidden states after that layer on generic text
    (`generic_text`): the fine-tune learns its skill while the layer still reads general
    text as the reference does (a common guard against forgetting).
    """
    train_words, _ = split_words(task)
    rng, text_rng = random.Random(seed), random.Random(seed + KEEP_TEXT_SEED)
    params = [p for n, p in model.named_parameters() if only is None or only in n]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    model.train()
    for _ in range(steps):
        ids, labels = _batch(task, rng.sample(train_words, batch))
        loss = model(input_ids=ids, labels=labels).loss
        if keep is not None:
            loss = loss + kept_states_loss(model, *keep, generic_text(text_rng))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def kept_states_loss(model, reference, layer: int, weight: float, ids: torch.Tensor
                     ) -> torch.Tensor:
    """weight x MSE between the hidden states after `layer` of `model` and `reference`."""
    with torch.no_grad():
        target = reference(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    states = model(input_ids=ids, output_hidden_states=True).hidden_states[layer + 1]
    return weight * torch.nn.functional.mse_loss(states, target)


# The specialists' guard against forgetting (`train`'s `keep`): without it, whether the two
# one-layer fine-tunes compose depended on the CPU's float rounding. Trained on an AMD EPYC
# (AVX2) with plain fine-tunes, the mother's layer 0 broke the father's layer 1: the child of
# the father's layer 1 and the mother's layer 0 kept neither skill (shift 0.15, mirror 0.00),
# so no merge could keep both. With the guard at 3.0 that child keeps both (0.93 and 1.00)
# and a uniform linear merge neither, on seeds 0-3 that child's shift is 0.42-0.93
# (docs/DEMO.md).
KEEP_WEIGHT = 3.0
KEEP_TEXT_SEED = 100


def make_two_skill_pair(folder: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """(base, father, mother) folders: a copy-trained base and its two skill fine-tunes."""
    folder = Path(folder)
    with cpu_threads(1):  # the same weights on machines of one kind (float rounding)
        base = train(build_llama(seed), "copy", 200, 3e-3, seed)
        paths = [write_tiny_model(base, folder / "base", "trained to copy 3-character "
                                  "words (`C abc=abc`)")]
        # Each specialist is a partial fine-tune of one layer (the father's of the upper
        # layer, the mother's of the lower), as partial fine-tunes often are.
        for name, task, layer, skill in (
                ("father", "skill_a", 1, "shift each letter by one (`S abc=bcd`)"),
                ("mother", "skill_b", 0, "mirror each digit (`M 307=692`)")):
            child = build_llama(seed)
            child.load_state_dict(base.state_dict())
            trained = train(child, task, 150, 3e-3, seed + 1, only=f"layers.{layer}.",
                            keep=(base, layer, KEEP_WEIGHT))
            paths.append(write_tiny_model(trained, folder / name, f"the base fine-tuned "
                                          f"(its layer {layer} only) to {skill}"))
    return paths[0], paths[1], paths[2]


# -- the task files and the cached folder -----------------------------------------------------
TASK_FILES = {"shift": "skill_a", "mirror": "skill_b", "copy": "copy"}  # file stem: skill
VERSION = "v2"  # bump when the trio's training or the task files change (v2: `keep`)
PROBE_PROMPTS = 32  # examples per probe set


def task_paths(folder: Path) -> dict[str, Path]:
    """{stem: tasks/<stem>.jsonl} in a trio's folder (the files `write_task_files` writes)."""
    return {stem: Path(folder) / "tasks" / f"{stem}.jsonl" for stem in TASK_FILES}


def write_task_files(folder: Path) -> dict[str, Path]:
    """tasks/<stem>.jsonl for each skill: its held-out words as greedy-continuation items
    ({"context": "<bos>S abc=", "continuation": "bcd"}); {stem: path}."""
    paths = task_paths(folder)
    (Path(folder) / "tasks").mkdir(parents=True, exist_ok=True)
    for stem, task in TASK_FILES.items():
        _, held_out = split_words(task)
        lines = [json.dumps({"context": "<bos>" + prompt_text(task, w),
                             "continuation": answer(task, w)}) for w in held_out]
        paths[stem].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return paths


def write_probe_files(folder: Path) -> Path:
    """FOLDER/probes/<stem>.jsonl for each skill: PROBE_PROMPTS whole examples on training
    words ({"text": "<bos>S abc=bcd<eos>"}), never a task file's word: text the trio reads,
    where it reads the default English probe sets worse than a uniform guess. Returns
    FOLDER/probes."""
    probes = Path(folder) / "probes"
    probes.mkdir(parents=True, exist_ok=True)
    for stem, task in TASK_FILES.items():
        trained, _ = split_words(task)
        lines = [json.dumps({"text": f"<bos>{prompt_text(task, w)}{answer(task, w)}<eos>"})
                 for w in trained[:PROBE_PROMPTS]]
        (probes / f"{stem}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return probes


def tiny_folder(cache: Path, seed: int = 0) -> Path:
    key = json.dumps({"seed": seed, "version": VERSION}, sort_keys=True)
    return Path(cache) / "models" / f"tiny-two-skill-{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def prepare_tiny_pair(cache: str | Path = ".cache", seed: int = 0) -> Path:
    """The trio and its task files under `<cache>/models/tiny-two-skill-<hash8>`, trained
    and written (atomically) on the first call, returned at once afterwards."""
    folder = tiny_folder(Path(cache), seed)
    if (folder / file_names.TINY_RECORD).is_file():
        return folder
    with atomic_output_dir(folder, overwrite=folder.exists()) as tmp:
        started = time.perf_counter()
        make_two_skill_pair(tmp, seed)
        write_task_files(tmp)
        record = {"seed": seed, "version": VERSION, "tasks": TASK_FILES,
                  "seconds": round(time.perf_counter() - started, 1)}
        (tmp / file_names.TINY_RECORD).write_text(json.dumps(record, indent=2) + "\n",
                                                  encoding="utf-8")
    return folder
