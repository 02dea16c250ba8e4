"""The demo's mother: the father fine-tuned, reproducibly, into an arithmetic specialist.

The demo needs a second parent of the same architecture with a skill the father lacks.
SmolLM2-135M-Instruct gets almost no `simple_arithmetic` item right, so the mother is the
father trained on synthetic problems in exactly that format ("25 - 759 =" -> " -734").

Why the recipe looks as it does (it must finish in about 20 minutes on 2 CPU cores):
- the loss covers the answer tokens only, and the vocabulary projection runs only at those
  positions (it is a fifth of the model's compute per token);
- the problems have 2 operands: 3-5 operand sums and 3-factor products stay out of reach
  in this budget, and spending steps on them left every answer wrong (docs/DEMO.md);
- only blocks 12-29 are trained: the backward pass stops at block 12 and the optimizer state
  is half the model's; the tied embeddings (shared by input and output) stay the father's.
  Training all blocks learned a little more arithmetic in the same steps, for about 1.4x
  the compute, and kept all of ARC-Easy: no trade-off left for the merge (docs/DEMO.md);
- bfloat16 autocast for the matmuls (float32 weights and optimizer state), batches of
  similar length (little padding);
- every problem is new (generated from a fixed seed), and every problem of the evaluation file
  is excluded, so the held-out score measures a skill, not memory.

The result is cached under `<cache>/models/<father>-arith-<hash8>`, keyed by the recipe, so a
second call returns the folder without training.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import string
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import torch

from darwin_merge.errors import UsageError
from darwin_merge.io import ModelSource, ModelWriter, atomic_output_dir
from darwin_merge.io.loading import load_model, load_tokenizer, resolve_device
from darwin_merge.io.writer import copy_side_files, write_config
from darwin_merge.merge.execute import cpu_threads
from darwin_merge.progress import progress_bar
from darwin_merge.records import FineTuneRecord, file_names, record_text
from darwin_merge.resources import cpu_has_fast_bfloat16

IGNORE = -100  # the label cross_entropy skips: context and padding tokens


@dataclass(frozen=True)
class MotherRecipe:
    """Everything that decides the mother's weights (its hash names the cache folder)."""

    skill: str = "two_digit_arithmetic"  # a key of SKILLS: the problems and their task
    seed: int = 1234
    steps: int = 400
    batch_size: int = 32
    lr: float = 5e-4
    warmup_steps: int = 20
    weight_decay: float = 0.0
    first_trained_layer: int = 0  # blocks from this one up are trained; the rest is frozen
    # The last trained block (None: up to the last one). Not in the hash when None, so the
    # folders cached before this field existed keep their names.
    last_trained_layer: int | None = None
    train_embeddings: bool = True  # also train the token embeddings (tied: the output head)
    max_operands: int = 2  # the problems a 135M model can learn in the budget (see DEMO.md)
    # bfloat16 matmuls (float32 weights and optimizer state) on a CPU that runs them natively
    # (AMX, AVX512-BF16); elsewhere torch emulates them, 16x slower than float32 on an AVX2
    # EPYC (162 s against 10 s a step of batch 32), so there the recipe trains in float32: in
    # the hash, so each kind of CPU caches its own fine-tune (docs/DEMO.md)
    autocast_bf16: bool = dataclasses.field(default_factory=lambda: bool(
        cpu_has_fast_bfloat16()))
    # CPU threads for training (0: torch's default); not in the hash. One by default: the
    # trajectory depends on the thread count (sums in another order), and on this recipe that
    # decides how soon the loss leaves its early plateau (2 threads: loss 1.04 at step 368,
    # 1 thread: 0.26), so one thread makes the cached mother the same on every CPU machine
    # with this torch build. On 2 cores it costs little: the matrices are small.
    threads: int = 1
    # CPU threads for the optimizer's step (0: the caller's count); not in the hash. AdamW's
    # step is element by element, so its result is the same for any count (a test checks it
    # bit for bit), and on 2 cores it takes a quarter of each step with one thread: the
    # default mother trains in about 3 minutes less.
    optimizer_threads: int = 0

    def key(self) -> dict:
        """The fields that change the weights (the thread counts do not)."""
        fields = dataclasses.asdict(self)
        fields.pop("threads")
        fields.pop("optimizer_threads")
        if fields["last_trained_layer"] is None:
            fields.pop("last_trained_layer")
        return fields

    def hash8(self, father: Path) -> str:
        text = json.dumps({"recipe": self.key(), "father": father.name, "data": DATA_VERSION},
                          sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:8]


def recipe_with(**changes) -> MotherRecipe:
    """The default recipe with the given fields changed (None leaves a field as it is)."""
    changes = {k: v for k, v in changes.items() if v is not None}
    unknown = set(changes) - {f.name for f in dataclasses.fields(MotherRecipe)}
    if unknown:
        raise UsageError(f"unknown recipe field(s): {', '.join(sorted(unknown))}")
    recipe = dataclasses.replace(MotherRecipe(), **changes)
    if recipe.steps < 1 or recipe.batch_size < 1 or recipe.lr <= 0:
        raise UsageError("steps and batch size must be at least 1 and the learning rate > 0")
    if recipe.max_operands < 2:
        raise UsageError("a problem has at least 2 operands (--max-operands >= 2)")
    skill_of(recipe.skill)  # unknown skill -> a clear error
    return recipe


# -- data ---------------------------------------------------------------------------------
DATA_VERSION = "v2"  # bump when a generator changes the problems a recipe draws
@dataclass(frozen=True)
class Skill:
    """Arithmetic problems in the format of one shipped `greedy_continuation` task.

    Training problems come from the same generator as the task's file, and every context of
    that file is excluded from training, so the task's score measures a skill, not memory.
    """

    task: str  # the evaluation task (tasks.yaml) whose format is learned
    file: str  # its file under data/tasks
    operand_counts: dict  # operator -> the operand counts it is drawn with
    operand_max: dict  # operator -> the largest operand (operands are 1..max)
    tag: str = "arith"  # the middle of the cached folder's name

    def problem(self, rng: random.Random, max_operands: int) -> tuple[str, str]:
        return arithmetic_problem(rng, max_operands, self)


@dataclass(frozen=True)
class Reordering:
    """Distinct symbols, spaced (one token each in SmolLM2's and Gemma's vocabularies),
    written back in another order: `order` "reversed" ("reverse: q x e n =" -> " n e x q")
    or "sorted" ("sort: 7 2 9 4 =" -> " 2 4 7 9")."""

    task: str
    file: str
    verb: str  # the prompt's first word
    alphabet: str
    order: Literal["reversed", "sorted"]
    tag: str  # the middle of the cached folder's name
    lengths: tuple[int, ...] = (4, 5, 6)

    def problem(self, rng: random.Random, max_operands: int = 0) -> tuple[str, str]:
        symbols = rng.sample(self.alphabet, rng.choice(self.lengths))
        answer = list(reversed(symbols)) if self.order == "reversed" else sorted(symbols)
        return f"{self.verb}: " + " ".join(symbols) + " =", " " + " ".join(answer)


SKILLS = {
    # The demo's default: two-operand sums and differences of numbers 1..99. The father
    # gets about 2% right; a fine-tune of a few minutes on CPU learns most of it.
    "two_digit_arithmetic": Skill("two_digit_arithmetic", "two_digit_arithmetic.jsonl",
                                  {"+": (2,), "-": (2,)}, {"+": 99, "-": 99}),
    # The evaluation file's own generator, read off its 1000 items: 2-5 operands in 1..999
    # for + and -, 2-3 operands in 1..99 for *. Two thirds of it (3-5 operands) stay out of
    # reach of a 135M model in this budget (docs/DEMO.md).
    "simple_arithmetic": Skill("simple_arithmetic", "simple_arithmetic_withspaces.jsonl",
                               {"+": (2, 3, 4, 5), "-": (2, 3, 4, 5), "*": (2, 3)},
                               {"+": 999, "-": 999, "*": 99}),
    # The specialists demo's second skill (demo/run.py, PAIR=specialists): a copying skill
    # with no digits in it, so it shares little with arithmetic. SmolLM2-135M-Instruct gets
    # none right.
    "letter_reversal": Reordering("letter_reversal", "letter_reversal.jsonl", "reverse",
                                  string.ascii_lowercase, "reversed", "rev"),
    # The third specialist of the three-specialist problem (issue 38): ordering over ten
    # symbols, neither a sum nor a copy in reverse.
    "digit_sorting": Reordering("digit_sorting", "digit_sorting.jsonl", "sort", string.digits,
                                "sorted", "sort"),
}


AnySkill = Skill | Reordering


def skill_of(name: str) -> AnySkill:
    if name not in SKILLS:
        raise UsageError(f"unknown mother skill {name!r} (known: {', '.join(SKILLS)})")
    return SKILLS[name]


def arithmetic_problem(rng: random.Random, max_operands: int = 5,
                       skill: Skill = SKILLS["simple_arithmetic"]) -> tuple[str, str]:
    """One problem as (context, continuation), e.g. ("25 - 759 =", " -734")."""
    op = rng.choice(sorted(skill.operand_counts))
    count = rng.choice([n for n in skill.operand_counts[op] if n <= max_operands])
    numbers = [rng.randint(1, skill.operand_max[op]) for _ in range(count)]
    value = numbers[0]
    for n in numbers[1:]:
        value = value + n if op == "+" else value - n if op == "-" else value * n
    return f" {op} ".join(map(str, numbers)) + " =", f" {value}"


def evaluation_contexts(path: Path | None = None,
                        skill: AnySkill = SKILLS["simple_arithmetic"]) -> set[str]:
    """The contexts of the skill's evaluation file: never used for training."""
    if path is None:
        path = resources.files("darwin_merge") / "data" / "tasks" / skill.file
    with path.open(encoding="utf-8") as handle:
        return {json.loads(line)["context"] for line in handle if line.strip()}


def training_problems(seed: int, count: int, exclude: set[str], max_operands: int = 5,
                      skill: AnySkill = SKILLS["simple_arithmetic"]) -> list[tuple[str, str]]:
    """`count` problems from a fixed seed, none of whose context is in `exclude`."""
    rng = random.Random(seed)
    problems = []
    while len(problems) < count:
        context, answer = skill.problem(rng, max_operands)
        if context not in exclude:
            problems.append((context, answer))
    return problems


# -- tokens ---------------------------------------------------------------------------------
def encode_example(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids and labels; labels are IGNORE on the context, so only the answer is learned.

    Split as lm-eval does (encode context + continuation, cut at the context's length), so
    the model learns exactly the tokens the evaluation asks it to predict.
    """
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    n_context = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    if whole[:n_context] != tokenizer(context, add_special_tokens=False)["input_ids"]:
        raise ValueError(f"tokenizer merges across the answer boundary in {context!r}")
    prefix = _bos(tokenizer)
    return prefix + whole, [IGNORE] * (len(prefix) + n_context) + whole[n_context:]


def _bos(tokenizer) -> list[int]:
    """[bos] when the tokenizer adds one by default (Gemma), else [] (as the evaluator)."""
    bos = tokenizer.bos_token_id
    ids = tokenizer("a")["input_ids"]
    return [bos] if bos is not None and ids and ids[0] == bos else []


def length_batches(examples: list, batch_size: int, seed: int, window: int = 8) -> list[list]:
    """Batches of similar length (less padding), in a seeded random order.

    Problems are sorted by length inside windows of `window` batches, so each batch still
    mixes operators while a 5-operand sum no longer pads a 2-operand product to its length.
    """
    rng = random.Random(seed)
    batches = []
    for start in range(0, len(examples), batch_size * window):
        block = sorted(examples[start: start + batch_size * window], key=lambda e: len(e[0]))
        chunk = [block[i: i + batch_size] for i in range(0, len(block), batch_size)]
        rng.shuffle(chunk)
        batches.extend(chunk)
    return batches


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded (input_ids, labels).

    No attention mask is needed: with right padding, a real token never attends to a later
    (padding) position under the causal mask, and padding labels are IGNORE.
    """
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, labs) in enumerate(examples):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, : len(labs)] = torch.tensor(labs)
    return input_ids, labels


# -- training -------------------------------------------------------------------------------
def select_trainable(model, first_layer: int, embeddings: bool = False,
                     last_layer: int | None = None) -> list[str]:
    """Freeze everything but the blocks `first_layer` to `last_layer` (None: the last block;
    and the token embeddings, which are also the output head when tied, if asked); return
    the trained names."""
    n_layers = model.config.get_text_config().num_hidden_layers
    last_layer = n_layers - 1 if last_layer is None else last_layer
    if not 0 <= first_layer <= last_layer < n_layers:
        raise UsageError(f"trained blocks {first_layer}..{last_layer} are not a range "
                         f"inside 0..{n_layers - 1}")
    embedding = model.get_input_embeddings().weight
    trained = []
    for name, param in model.named_parameters():
        layer = _layer_of(name)
        in_blocks = layer is not None and first_layer <= layer <= last_layer
        param.requires_grad_(in_blocks or (embeddings and param is embedding))
        if param.requires_grad:
            trained.append(name)
    return trained


def _layer_of(name: str) -> int | None:
    parts = name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part == "layers" and parts[i + 1].isdigit():
            return int(parts[i + 1])
    return None


def answer_loss(model, input_ids: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the answer tokens, projecting to the vocabulary only there."""
    hidden = model.get_decoder()(input_ids=input_ids, use_cache=False).last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep]).float()
    cap = getattr(model.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return torch.nn.functional.cross_entropy(logits, targets[keep])


def learning_rate(step: int, recipe: MotherRecipe) -> float:
    """Linear warm-up, then cosine decay to a tenth of the peak."""
    if step < recipe.warmup_steps:
        return recipe.lr * (step + 1) / recipe.warmup_steps
    progress = (step - recipe.warmup_steps) / max(1, recipe.steps - recipe.warmup_steps)
    return recipe.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model, tokenizer, recipe: MotherRecipe, exclude: set[str], device: torch.device,
          progress: bool = True, optimizer_threads: int | None = None) -> dict:
    """Fine-tune `model` in place (it is the caller's fresh copy); return the run's numbers.
    `optimizer_threads`: torch CPU threads for the optimizer's steps (None: as the rest).
    Seeded inside and the random state restored after (fork_rng): the caller's later
    random draws do not depend on a training having run."""
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(recipe.seed)
        return _seeded_train(model, tokenizer, recipe, exclude, device, progress,
                             optimizer_threads)


def _seeded_train(model, tokenizer, recipe: MotherRecipe, exclude: set[str],
                  device: torch.device, progress: bool, optimizer_threads: int | None) -> dict:
    trained = select_trainable(model, recipe.first_trained_layer, recipe.train_embeddings,
                               recipe.last_trained_layer)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay,
                                  foreach=True)
    problems = training_problems(recipe.seed, recipe.steps * recipe.batch_size, exclude,
                                 recipe.max_operands, skill_of(recipe.skill))
    examples = [encode_example(tokenizer, c, a) for c, a in problems]
    batches = length_batches(examples, recipe.batch_size, recipe.seed)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.train()
    losses, tokens, start = [], 0, time.perf_counter()
    with progress_bar(progress) as bar:
        # named by its skill: the specialists pair trains its father this way too
        label = f"fine-tuning on {recipe.skill}"
        task = bar.add_task(label, total=recipe.steps)
        for step in range(recipe.steps):
            input_ids, labels = collate(batches[step], pad_id)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, recipe)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=recipe.autocast_bf16):
                loss = answer_loss(model, input_ids.to(device), labels.to(device))
            loss.backward()
            with cpu_threads(optimizer_threads):
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
            tokens += sum(len(ids) for ids, _ in batches[step])
            recent = sum(losses[-20:]) / len(losses[-20:])
            bar.update(task, advance=1, description=f"{label} (loss {recent:.3f})")
    model.eval()
    seconds = time.perf_counter() - start
    return {"trained_tensors": len(trained), "trained_params": sum(p.numel() for p in params),
            "problems": len(problems), "tokens": tokens, "seconds": round(seconds, 1),
            "tokens_per_second": round(tokens / seconds, 1), "first_loss": losses[0],
            "final_loss": sum(losses[-20:]) / len(losses[-20:])}


# -- the cached folder --------------------------------------------------------------------
def mother_folder(father: Path, cache: Path, recipe: MotherRecipe) -> Path:
    tag = skill_of(recipe.skill).tag
    return Path(cache) / "models" / f"{Path(father).name}-{tag}-{recipe.hash8(Path(father))}"


def prepare_mother(father: str | Path, cache: str | Path = ".cache",
                   recipe: MotherRecipe | None = None, device: str = "cpu",
                   progress: bool = True, exclude_file: Path | None = None) -> Path:
    """Return the mother's folder, training and writing it first if it is not cached."""
    father, recipe = Path(father), recipe or MotherRecipe()
    folder = mother_folder(father, Path(cache), recipe)
    if (folder / file_names.FINE_TUNE_RECORD).is_file():
        return folder
    torch_device = resolve_device(device)
    tokenizer = load_tokenizer(father)
    model = load_model(father, device=str(torch_device), dtype="float32")
    skill = skill_of(recipe.skill)
    threads = torch.get_num_threads()
    if recipe.threads:
        torch.set_num_threads(recipe.threads)
    try:
        numbers = train(model, tokenizer, recipe, evaluation_contexts(exclude_file, skill),
                        torch_device, progress, recipe.optimizer_threads or threads)
    finally:
        torch.set_num_threads(threads)  # the rest of the demo runs with the caller's threads
    with atomic_output_dir(folder, overwrite=folder.exists()) as tmp:
        write_like(model, father, tmp)
        record = FineTuneRecord(father=str(father), recipe=recipe.key(), data=DATA_VERSION,
                                device=str(torch_device), **numbers)
        (tmp / file_names.FINE_TUNE_RECORD).write_text(record_text(record, indent=2))
    return folder


def write_like(model, father: Path, folder: Path) -> None:
    """Write the model's weights under the father's tensor names, dtype and side files."""
    state = model.state_dict()
    with ModelSource(father) as source:
        writer = ModelWriter(folder)
        for name in source.names:
            tensor = state[name] if name in state else state[f"model.{name}"]
            writer.add(name, tensor.to(source.get(name).dtype))
        writer.finish()
        config = dict(source.config)
    write_config(config, folder)
    copy_side_files(father, folder)
