"""`darwin push`: what it checks offline and what it would upload, up to the upload call
(huggingface_hub's HfApi is replaced by a recorder; nothing leaves the machine)."""

from __future__ import annotations

from pathlib import Path

import huggingface_hub
import pytest

from darwin_merge.cli import main
from darwin_merge.scan import run_scan


@pytest.fixture(scope="module")
def child(tiny_trio, tmp_path_factory) -> Path:
    """A merged child with its card: README.md and the scan's pictures beside the weights."""
    base, father, mother = tiny_trio
    root = tmp_path_factory.mktemp("push")
    run_scan(father, mother, root / "scan", max_tokens=8, max_prompts=2, progress=False)
    folder = root / "child"
    assert main(["merge", "--father", str(father), "--mother", str(mother), "--base", str(base),
                 "--scan", str(root / "scan" / "scan.json"), "--out", str(folder)]) == 0
    assert main(["card", str(folder), "--father-id", "org/father",
                 "--mother-id", "org/mother"]) == 0
    return folder


@pytest.fixture
def hub_calls(monkeypatch) -> list:
    calls = []
    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo",
                        lambda self, repo_id, **kw: calls.append(("create_repo", repo_id, kw)))

    def upload_folder(self, **kw):
        calls.append(("upload_folder", kw["repo_id"], kw))
        return "https://huggingface.co/me/child/commit/0"

    monkeypatch.setattr(huggingface_hub.HfApi, "upload_folder", upload_folder)
    return calls


def test_push_uploads_the_child_its_card_and_pictures(child, hub_calls, capsys):
    assert main(["push", str(child), "me/child", "--private"]) == 0
    (_, repo, create), (_, repo2, upload) = hub_calls
    assert repo == repo2 == "me/child" and create["private"] is True
    files = sorted(p.name for p in child.iterdir() if p.is_file())
    assert upload["allow_patterns"] == files
    assert {"README.md", "model.safetensors", "config.json", "darwin_merge.json"} <= set(files)
    assert any(name.endswith(".png") for name in files)
    assert Path(upload["folder_path"]) == child.resolve() or Path(upload["folder_path"]) == child
    assert "uploaded: https://huggingface.co/me/child/commit/0" in capsys.readouterr().out


def test_dry_run_uploads_nothing(child, hub_calls, capsys):
    assert main(["push", str(child), "me/child", "--dry-run"]) == 0
    assert hub_calls == []
    assert "README.md" in capsys.readouterr().out


def test_a_card_naming_a_local_path_is_refused_before_upload(child, tmp_path, hub_calls,
                                                             capsys):
    copy = tmp_path / "child"
    copy.mkdir()
    for file in child.iterdir():
        (copy / file.name).write_bytes(file.read_bytes())
    card = (copy / "README.md").read_text()
    (copy / "README.md").write_text(card.replace("- org/father", f"- {child.parent}/father"))
    assert main(["push", str(copy), "me/child"]) == 2
    err = capsys.readouterr().err
    assert "is not a Hub id (org/name)" in err and err.count("\n") == 1
    assert hub_calls == []


def test_no_card_or_a_bad_repo_id_is_refused(child, tmp_path, hub_calls, capsys):
    copy = tmp_path / "bare"
    copy.mkdir()
    for name in ("config.json", "model.safetensors"):
        (copy / name).write_bytes((child / name).read_bytes())
    assert main(["push", str(copy), "me/child"]) == 2
    assert "no model card (README.md)" in capsys.readouterr().err
    assert main(["push", str(child), "not a repo"]) == 2
    assert "is not a Hub repository id" in capsys.readouterr().err
    assert hub_calls == []
