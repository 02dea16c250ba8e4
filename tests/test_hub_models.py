"""Models named by their Hub ids: resolved offline from a real huggingface_hub cache folder
(models--org--name/refs/main, snapshots/<commit>/...) that these tests build from tiny
models, for every command that takes a model and in a mergekit YAML; the records keep the
40-hex commit; a pickle-only Hub model and an uncached id are one-line errors."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from darwin_merge.cli import main
from darwin_merge.errors import ModelFormatError
from darwin_merge.evolve.recipe import build_recipe, check_recipe
from darwin_merge.io import ModelSource
from darwin_merge.io.model_ref import hub_id_of, resolve_model

ORG = "darwin-test"


def _commit(name: str) -> str:
    return hashlib.sha1(name.encode()).hexdigest()


def cache_model(cache: Path, repo: str, folder: Path) -> str:
    """Lay `folder` out as huggingface_hub caches a download of `repo` at main: the files
    in blobs/ by their hash, the snapshot's entries relative links to them."""
    commit = _commit(repo)
    root = cache / f"models--{repo.replace('/', '--')}"
    snapshot = root / "snapshots" / commit
    (root / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for file in folder.iterdir():
        blob = hashlib.sha256(file.read_bytes()).hexdigest()
        shutil.copyfile(file, root / "blobs" / blob)
        (snapshot / file.name).symlink_to(Path("..", "..", "blobs", blob))
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    return commit


@pytest.fixture(scope="module")
def hub(tiny_trio, tmp_path_factory):
    """The cache (HF_HUB_CACHE for the module): base, father and mother of the tiny trio,
    and `pickled`, the father saved as pytorch_model.bin only."""
    base, father, mother = tiny_trio
    cache = tmp_path_factory.mktemp("hub")
    pickled = tmp_path_factory.mktemp("pickled") / "m"
    shutil.copytree(father, pickled)
    torch.save(load_file(pickled / "model.safetensors"), pickled / "pytorch_model.bin")
    (pickled / "model.safetensors").unlink()
    commits = {name: cache_model(cache, f"{ORG}/{name}", folder) for name, folder in
               (("base", base), ("father", father), ("mother", mother), ("pickled", pickled))}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_CACHE", str(cache))
        patch.setenv("HF_HUB_OFFLINE", "1")
        yield commits


def test_hub_id_readings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert hub_id_of("org/name")["repo"] == "org/name"
    assert hub_id_of("org/name@main")["revision"] == "main"
    assert hub_id_of("./org/name") is None and hub_id_of("/org/name") is None
    assert hub_id_of("org/name/more") is None and hub_id_of("name") is None
    (tmp_path / "runs").mkdir()
    assert hub_id_of("runs/child") is None  # its first part is a folder here: a path


def test_a_hub_id_resolves_to_its_cached_commit(hub):
    for text in (f"{ORG}/father", f"{ORG}/father@main"):
        ref = resolve_model(text)
        assert ref.hub_id == f"{ORG}/father" and ref.commit == hub["father"]
        assert str(ref) == f"{ORG}/father@{hub['father']}"
        assert ref.path.is_dir() and ref.path.name == hub["father"]
    assert resolve_model(f"{ORG}/father@{hub['father']}").commit == hub["father"]


def test_an_uncached_id_offline_is_one_line_with_exit_code_3(hub, capsys):
    assert main(["inspect", f"{ORG}/absent"]) == 3
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no folder {ORG}/absent, and no cached Hub model {ORG}/absent" in err


def test_a_pickle_only_hub_model_needs_allow_pickle(hub, capsys):
    assert main(["inspect", f"{ORG}/pickled"]) == 3
    assert "pickle" in capsys.readouterr().err
    with ModelSource(f"{ORG}/pickled", allow_pickle=True) as source:
        assert source.ref.commit == hub["pickled"] and source.names


def test_every_command_takes_hub_ids_and_the_records_keep_the_commit(hub, tmp_path, capsys):
    father, mother, base = f"{ORG}/father", f"{ORG}/mother@main", f"{ORG}/base"
    pinned = {role: f"{ORG}/{role}@{hub[role]}" for role in ("father", "mother", "base")}
    parents = ["--father", father, "--mother", mother, "--base", base]
    assert main(["inspect", father, mother]) == 0
    assert main(["plan", *parents]) == 0
    child = tmp_path / "child"
    assert main(["merge", *parents, "--out", str(child)]) == 0
    record = json.loads((child / "darwin_merge.json").read_text())
    assert record["parents"] == pinned
    probes = ["--max-tokens", "8", "--max-prompts", "2"]
    assert main(["scan", "--father", father, "--mother", mother, "--out",
                 str(tmp_path / "scan"), *probes]) == 0
    scan = json.loads((tmp_path / "scan" / "scan.json").read_text())
    assert (scan["father"], scan["mother"]) == (pinned["father"], pinned["mother"])
    assert main(["health", "--child", str(child), "--father", father, "--mother", mother,
                 *probes]) == 0
    assert main(["eval", father, "--tasks", "copa", "--limit", "2", "--out",
                 str(tmp_path / "eval.json")]) == 0
    assert json.loads((tmp_path / "eval.json").read_text())["model_name"] == pinned["father"]
    assert main(["export-mergekit", str(child), "--out", str(tmp_path / "x.yml")]) == 0
    exported = yaml.safe_load((tmp_path / "x.yml").read_text())
    assert exported["base_model"] == pinned["base"]
    assert main(["card", str(child)]) == 0
    front = (child / "README.md").read_text().split("---")[1]
    assert yaml.safe_load(front)["base_model"] == [f"{ORG}/father", f"{ORG}/mother"]
    assert pinned["father"] in (child / "README.md").read_text()
    capsys.readouterr()


def test_a_mergekit_yaml_names_hub_models(hub, tmp_path):
    config = tmp_path / "ta.yml"
    config.write_text(yaml.safe_dump({
        "merge_method": "task_arithmetic", "base_model": f"{ORG}/base@main",
        "models": [{"model": f"{ORG}/father", "parameters": {"weight": 1.0}},
                   {"model": f"{ORG}/mother", "parameters": {"weight": 1.0}}]}))
    assert main(["merge", "--mergekit-config", str(config), "--out", str(tmp_path / "c")]) == 0
    assert (tmp_path / "c" / "model.safetensors").is_file()


def test_a_search_recipe_names_its_parents_by_commit(hub, tmp_path, monkeypatch):
    import darwin_merge.evolve.run as evolve_run

    recipe = build_recipe(father=f"{ORG}/father", mother=f"{ORG}/mother@main",
                          fitness={"copa": 1.0}, out=tmp_path / "run")
    assert recipe.identity()["father"] == f"{ORG}/father@{hub['father']}"
    assert recipe.model_dump()["mother"] == f"{ORG}/mother@{hub['mother']}"
    assert Path(recipe.father).name == hub["father"]
    seen = {}
    monkeypatch.setattr(evolve_run, "run_evolve",  # the search itself: test_evolve.py
                        lambda recipe, finish_run: seen.setdefault("recipe", recipe))
    assert main(["evolve", "--father", f"{ORG}/father", "--mother", f"{ORG}/mother@main",
                 "--fitness", "copa=1", "--out", str(tmp_path / "run"), "--search-only"]) == 0
    check_recipe(seen["recipe"])
    assert seen["recipe"].identity()["mother"] == f"{ORG}/mother@{hub['mother']}"
    with pytest.raises(ModelFormatError, match="no cached Hub model"):
        build_recipe(father=f"{ORG}/absent", mother=f"{ORG}/mother", fitness={"copa": 1.0},
                     out=tmp_path / "run")
