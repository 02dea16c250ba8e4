"""The model card and the run report, built from the records a real tiny search wrote
(the session fixture `evolved_run` in conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from darwin_merge.card.build import write_card, write_report
from darwin_merge.card.readings import block_layers, reading, share_words
from darwin_merge.cli import main
from darwin_merge.errors import UsageError


@pytest.fixture(scope="module")
def run_folder(evolved_run) -> dict:
    return evolved_run


@pytest.fixture(scope="module")
def card(run_folder) -> str:
    return write_card(run_folder["child"], run_folder["run"]).read_text()


def split_card(text: str) -> tuple[dict, str]:
    """(front matter as parsed by yaml.safe_load, the Markdown body)."""
    assert text.startswith("---\n")
    head, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(head), body


def section(body: str, title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", body, re.S | re.M)
    assert match, f"no section {title!r}"
    return match.group(1)


def table_rows(text: str) -> list[list[str]]:
    """The rows of the first Markdown table in `text` (header and separator dropped)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in line.strip("|").split(" | ")] for line in lines[2:]]


def _strings(value):
    if isinstance(value, dict):
        yield from (s for v in value.values() for s in _strings(v))
    elif isinstance(value, list):
        yield from (s for v in value for s in _strings(v))
    elif isinstance(value, str):
        yield value


def test_front_matter_is_hub_valid_with_tags_and_scores_on_hub_datasets(card, run_folder):
    from huggingface_hub import ModelCard

    meta, body = split_card(card)
    # the parents are local folders: no base_model (the Hub takes ids only), named in the text
    assert "base_model" not in meta and str(run_folder["father"]) in body
    assert meta["license"] == "apache-2.0"
    assert meta["tags"] == ["merge", "darwin", "dare_ties"]
    assert meta["pipeline_tag"] == "text-generation"
    holdout = run_folder["summary"]["holdout"]
    parsed = ModelCard(card).data
    assert parsed.model_name == "run"  # the run's name, not `child`
    # the ARC tasks come from a Hub data set; simple_arithmetic's packaging has no Hub copy
    results = {r.dataset_config: r for r in parsed.eval_results}
    assert set(results) == {"ARC-Easy", "ARC-Challenge"}
    result = results["ARC-Easy"]
    assert (result.dataset_type, result.dataset_split) == ("allenai/ai2_arc", "test")
    assert result.metric_type == holdout["tasks"]["arc_easy"]["metric"]
    assert result.metric_value == holdout["models"]["child"]["arc_easy"][result.metric_type]
    assert f"{holdout['tasks']['arc_easy']['n']} held-out items" in result.dataset_name
    assert not [s for s in _strings(meta) if "/" in s and Path(s).exists()]


def test_parent_hub_ids_given_on_the_command_line(run_folder, tmp_path, capsys):
    from huggingface_hub import ModelCard

    child = shutil.copytree(run_folder["child"], tmp_path / "child")
    assert main(["card", str(child), "--father-id", "org/father-model",
                 "--mother-id", "org/mother-model"]) == 0
    data = ModelCard((child / "README.md").read_text()).data
    assert data.base_model == ["org/father-model", "org/mother-model"]
    assert data.base_model_relation == "merge"
    assert main(["card", str(child), "--father-id", str(tmp_path)]) == UsageError.exit_code
    assert "not a Hub model id" in capsys.readouterr().err


def test_genome_table_and_hash_match_the_child(card, run_folder):
    _, body = split_card(card)
    merge = run_folder["merge"]
    rows = table_rows(section(body, "Genome"))
    parsed = {name: float(value) for name, value, _ in rows}
    genes = {k: v for k, v in merge["genome"].items() if k != "genome_rule"}
    assert list(parsed) == list(genes)
    for name, value in genes.items():
        assert parsed[name] == pytest.approx(value, abs=5e-5)
    assert f"genome rule `{merge['genome_rule']}`" in section(body, "Genome")
    readings = {name: words for name, _, words in rows}
    for name in ("attn_ratio", "ffn_ratio"):  # the row reads the child's own value
        assert readings[name].endswith(share_words(merge["genome"][name]))
    assert "no effect" in readings["density_a"]  # no base: the father is the base
    repro = dict((k, v) for k, v, *_ in table_rows(section(body, "Reproducibility")))
    assert repro["genome_hash"] == f"`{merge['genome_hash']}`"
    assert run_folder["summary"]["command"] in section(body, "Reproducibility")


def test_evolution_section_says_who_found_the_child_and_the_best_seed(card, run_folder):
    _, body = split_card(card)
    rows = dict((k, v) for k, v, *_ in table_rows(section(body, "Evolution result")))
    trials = {t["number"]: t for t in json.loads((run_folder["run"] / "trials.json").read_text())}
    best = trials[run_folder["summary"]["best"]["trial"]]
    assert rows["Found by"].startswith({"anchor": "the anchor", "cma_es": "CMA-ES",
                                        "proxy_top_k": "Phase 1's proxy"}[best["source"]])
    seeds = [t for t in trials.values() if t["source"] in ("proxy_top_k", "anchor")
             and t["race"]["outcome"] == "full"]
    seed = max(seeds, key=lambda t: (t["fitness"], -t["number"]))
    assert f"trial {seed['number']}, search fitness {seed['fitness']:.4f}" in rows["Best seed"]
    assert rows["CMA-ES generations"] == "0"  # 4 trials: the proxy's top 2 and 2 anchors


def test_benchmark_table_holds_every_model_with_stderr(card, run_folder):
    """A row per model of summary.json's holdout table, in its order: each task's primary
    score ± its standard error, the holdout fitness and the search split's."""
    _, body = split_card(card)
    text = section(body, "Benchmarks")
    holdout, search = run_folder["summary"]["holdout"], run_folder["summary"]["search_split"]
    table = next(block for block in text.split("\n\n") if block.startswith("| model |"))
    header = table.splitlines()[0]
    columns = [c.strip() for c in header.strip("|").split(" | ")]
    tasks = list(holdout["tasks"])
    assert columns[1:-2] == [f"{t} ({spec['role']}, {spec['metric']}, n={spec['n']})"
                             for t, spec in holdout["tasks"].items()]
    rows = table_rows(table)
    assert [row[0] for row in rows] == list(holdout["models"])
    assert {"dare_ties_0.5", "linear_0.5", "task_arithmetic_l1"} <= set(holdout["models"])
    for model, *cells, fitness, search_fitness in rows:
        expected = holdout["models"][model]
        for task, cell in zip(tasks, cells, strict=True):
            value, stderr = (float(x) for x in cell.split(" ± "))
            metric = holdout["tasks"][task]["metric"]
            assert value == pytest.approx(expected[task][metric], abs=5e-4)
            assert stderr == pytest.approx(expected[task][metric + "_stderr"], abs=5e-4)
        assert float(fitness) == pytest.approx(expected["fitness"], abs=5e-5)
        assert float(search_fitness) == pytest.approx(search[model], abs=5e-5)


def test_benchmarks_show_every_baseline_and_the_childs_lead_over_the_best_tuned(card, run_folder):
    """The baselines' table: each baseline's recipe, why it is there, its health verdict and
    the child's paired difference, from summary.json; the headline names the best tuned."""
    _, body = split_card(card)
    text = section(body, "Benchmarks")
    summary = run_folder["summary"]
    search = summary["baseline_search"]
    tables = [block for block in text.split("\n\n") if block.startswith("| baseline |")]
    rows = {row[0]: row for row in table_rows(tables[0])}
    assert set(rows) == set(summary["holdout"]["models"]) - {"child", "father", "mother"}
    assert rows["dare_ties_0.5"][1] == "darwin genome: DARE-TIES, every ratio 0.5, density 0.9"
    assert rows["linear_0.5"][1] == "darwin genome: linear, every ratio 0.5"
    assert rows["task_arithmetic_l1"][1:3] == ["task arithmetic, lambda 1", "fixed"]
    best = search["best_tuned"]
    assert "BEST TUNED" in rows[best][2]
    for name, row in rows.items():
        assert row[4] == (search["health"][name] or "-")
        diff = summary["holdout"]["comparisons"][name]["fitness"]["diff"]
        assert row[7].startswith(f"{diff:+.3f}")
    assert f"The best tuned baseline is {best} (" in text


def test_pictures_are_copied_beside_the_card_and_linked_relatively(card, run_folder):
    child = run_folder["child"]
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", card)
    assert set(links) == {"mds_father_mother.png", "mri_ratio.png", "ratio_profile.png",
                          "health.png"}
    for link in links:
        data = (child / link).read_bytes()
        assert data.startswith(b"\x89PNG")
    assert (child / "mds_father_mother.png").read_bytes() == \
        (run_folder["run"] / "scan" / "mds_father_mother.png").read_bytes()
    verdict = json.loads((run_folder["run"] / "health" / "health.json").read_text())["verdict"]
    assert section(split_card(card)[1], "Health check").startswith(f"\nVerdict: **{verdict}**")


def test_child_alone_has_no_run_sections_and_no_invented_numbers(run_folder, tmp_path):
    child = shutil.copytree(run_folder["child"], tmp_path / "alone",
                            ignore=shutil.ignore_patterns("README.md", "*.png"))
    meta, body = split_card(write_card(child).read_text())
    assert "model-index" not in meta
    for title in ("Benchmarks", "Health check", "Evolution result"):
        assert f"## {title}" not in body
    # the search merged with its scan: the child's own record names it, so the card
    # describes the scan even without the run folder
    assert run_folder["merge"]["options"]["scan"]
    assert "## Model Diagnostic Scan (MDS)" in body
    assert "## Genome" in body and "## Ratio profile" in body
    assert not re.search(r"\b(nan|None|null)\b", body.split("```json")[0])
    assert not (child / "health.png").exists()


@pytest.mark.parametrize("key", ["holdout", "health", "rejected_by_health"])
def test_a_summary_without_a_key_the_finish_writes_is_refused(run_folder, tmp_path, capsys,
                                                              key):
    """Every run's finish writes every key of summary.json: a file without one is not a
    summary this Darwin wrote (one line, exit 2, the card left as it was), not a run whose
    sections the card quietly leaves out."""
    run = shutil.copytree(run_folder["run"], tmp_path / "run")
    summary = json.loads((run / "summary.json").read_text())
    del summary[key]
    (run / "summary.json").write_text(json.dumps(summary))
    card_before = (run / "child" / "README.md").read_bytes()
    capsys.readouterr()
    assert main(["card", str(run / "child"), "--run", str(run)]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("darwin")]
    assert len(err) == 1 and key in err[0] and "summary.json" in err[0]
    assert (run / "child" / "README.md").read_bytes() == card_before


def test_licence_is_other_when_parents_disagree_and_absent_when_unknown(run_folder, tmp_path):
    root = tmp_path / "lic"
    father = shutil.copytree(run_folder["father"], root / "father")
    mother = shutil.copytree(run_folder["mother"], root / "mother")
    child = shutil.copytree(run_folder["child"], root / "child")
    report = json.loads((child / "darwin_merge.json").read_text())
    report["parents"] = {"father": str(father), "mother": str(mother), "base": None}
    (child / "darwin_merge.json").write_text(json.dumps(report))
    (mother / "README.md").write_text("---\nlicense: mit\n---\n")
    assert split_card(write_card(child).read_text())[0]["license"] == "other"
    (mother / "README.md").unlink()
    assert "license" not in split_card(write_card(child).read_text())[0]


def test_share_readings_follow_the_numbers():
    assert share_words(0.05) == "almost all from the father"
    assert share_words(0.5) == "near balanced"
    assert share_words(0.7) == "mostly from the mother"
    assert share_words(1.0) == "almost all from the mother"
    assert block_layers(5, 30) == "layers 25-29 of 30"
    assert block_layers(0, 18) == "layers 0-2 of 18"
    assert reading("merge_method_weight", 0.25) == \
        "each tensor is 25% DARE-TIES + 75% linear interpolation"
    assert reading("mri_trust", 0.4) == "final ratio = 40% scan (MDS) + 60% genome"
    assert reading("density_b", 0.5) == "DARE keeps 50% of the mother's task-vector entries"


def test_cli_writes_card_and_report(run_folder, tmp_path, capsys):
    run = shutil.copytree(run_folder["run"], tmp_path / "run")
    (run / "child" / "README.md").unlink(missing_ok=True)
    assert main(["card", str(run / "child"), "--run", str(run)]) == 0
    assert (run / "child" / "README.md").read_text().startswith("---\n")
    assert (run / "report.html").read_text().startswith("<!DOCTYPE html>")
    assert main(["card", str(tmp_path / "missing")]) == UsageError.exit_code
    assert "does not exist" in capsys.readouterr().err


def test_write_report_alone_finds_the_child(run_folder, card, tmp_path):
    run = shutil.copytree(run_folder["run"], tmp_path / "run")
    (run / "report.html").unlink(missing_ok=True)
    path = write_report(run)
    html = path.read_text()
    assert path == run / "report.html"
    card_titles = re.findall(r"^## (.+)$", card, re.M)
    report_titles = re.findall(r'<h2 id="[^"]*">([^<]+)</h2>', html)
    evolution = card_titles.index("Evolution result") + 1
    assert report_titles == (card_titles[:evolution] + ["Evolution plot"]
                             + card_titles[evolution:] + ["Trials"])
    assert html.count('<img src="data:image/png;base64,') == 5  # the card's 4 + evolution
    assert 'class="sortable"' in html and "src=\"http" not in html


# -- the report in a real browser ------------------------------------------------------
CHROMIUM = Path("/usr/bin/chromium")
# Run in the page after it loads: sort the trial table by fitness (two clicks: descending),
# record the highlighted trial and each picture's decoded width, so --dump-dom shows them.
PROBE = """<script>
window.addEventListener("load", () => {
  const table = document.querySelector("table.sortable");
  const th = Array.from(table.tHead.rows[0].cells).find(c => c.textContent === "fitness");
  th.click(); th.click();
  document.body.dataset.markedTrial = document.querySelector("tr.marked").cells[0].textContent;
  document.body.dataset.imageWidths =
    Array.from(document.images).map(img => img.naturalWidth).join(",");
});
</script>"""


def chromium(tmp: Path, *args: str) -> str:
    """Run headless Chromium with a fresh profile and no network; return its stdout."""
    import subprocess

    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp / 'profile'}", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env={"HOME": str(tmp)})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


class PageParts:
    """Title, tables (with body row counts) and pictures of a dumped DOM."""

    def __init__(self, dom: str):
        from html.parser import HTMLParser

        self.title, self.tables, self.images, self.body = "", [], [], {}
        parts, state = self, {"in_title": False, "in_tbody": False}

        class Parser(HTMLParser):
            def handle_starttag(self, tag, attrs):
                attrs = dict(attrs)
                if tag == "title":
                    state["in_title"] = True
                elif tag == "table":
                    parts.tables.append({"class": attrs.get("class"), "rows": 0, "cells": []})
                elif tag == "tbody":
                    state["in_tbody"] = True
                elif tag == "tr" and state["in_tbody"]:
                    parts.tables[-1]["rows"] += 1
                    parts.tables[-1]["cells"].append([])
                elif tag == "img":
                    parts.images.append(attrs.get("src", ""))
                elif tag == "body":
                    parts.body = attrs
                state["tag"] = tag

            def handle_endtag(self, tag):
                if tag == "title":
                    state["in_title"] = False
                elif tag == "tbody":
                    state["in_tbody"] = False

            def handle_data(self, data):
                if state["in_title"]:
                    parts.title += data
                elif state["in_tbody"] and state.get("tag") == "td" and parts.tables:
                    parts.tables[-1]["cells"][-1].append(data)

        Parser().feed(dom)


def test_report_renders_in_headless_chromium(run_folder, tmp_path):
    import matplotlib.image

    # never skipped: `make test` installs chromium (scripts/test-services.sh start)
    assert CHROMIUM.exists(), "needs Debian's chromium: bash scripts/test-services.sh start"

    report = write_report(run_folder["run"], run_folder["child"])
    trials = json.loads((run_folder["run"] / "trials.json").read_text())
    shot = tmp_path / "report.png"
    chromium(tmp_path, f"--screenshot={shot}", "--window-size=1280,2000", report.as_uri())
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1280)
    assert len({tuple(p) for p in pixels[::7, ::7].reshape(-1, pixels.shape[2])}) > 50

    probed = tmp_path / "probed.html"
    probed.write_text(report.read_text().replace("</body>", PROBE + "</body>"))
    page = PageParts(chromium(tmp_path, "--dump-dom", probed.as_uri()))
    assert page.title == "Darwin run report: run"  # a run's `child` takes the run's name
    assert len(page.images) == 5 and all(s.startswith("data:image/png;base64,")
                                         for s in page.images)
    widths = [int(w) for w in page.body["data-image-widths"].split(",")]
    assert len(widths) == 5 and min(widths) > 100  # every picture decoded
    sortable = [t for t in page.tables if t["class"] == "sortable"]
    assert len(sortable) == 1 and sortable[0]["rows"] == len(trials)
    assert len(page.tables) >= 7  # parents, genome, modes, evolution, benchmarks, repro
    fitness = [float(row[3]) for row in sortable[0]["cells"]]
    assert fitness == sorted(fitness, reverse=True)
    assert page.body["data-marked-trial"] == str(run_folder["summary"]["best"]["trial"])
    by_number = {t["number"]: t for t in trials}
    for row in sortable[0]["cells"]:  # each task's metric, pulled out of the score dicts
        trial = by_number[int(row[0])]
        assert float(row[5]) == pytest.approx(trial["scores"]["arc_easy"]["acc"], abs=5e-5)
        arithmetic = trial["scores"]["simple_arithmetic"]
        assert arithmetic["metric"] == "acc"  # tasks.yaml: a greedy continuation's metric
        assert float(row[6]) == pytest.approx(arithmetic[arithmetic["metric"]], abs=5e-5)
        assert float(row[7]) == pytest.approx(sum(trial["seconds"].values()), abs=5e-5)
    assert fitness[0] == pytest.approx(max(t["fitness"] for t in trials), abs=5e-5)


def test_merge_with_a_scan_reads_mri_trust_and_finds_the_scan_pictures(run_folder, tmp_path):
    """`darwin card CHILD` alone, for a child merged with a scan: the scan's pictures are
    found beside the scan file, and mri_trust is read as the scan/genome split."""
    from darwin_merge.genome import Genome
    from darwin_merge.merge.engine import merge_models
    from darwin_merge.scan.run import run_scan
    GENOME = run_folder["summary"]["best"]["genome"]

    father, mother = run_folder["father"], run_folder["mother"]
    run_scan(father, mother, tmp_path / "scan", max_tokens=16, max_prompts=1, progress=False)
    child = merge_models(father, mother, tmp_path / "child", genome=Genome(**GENOME),
                         scan=tmp_path / "scan" / "scan.json", progress=False)
    _, body = split_card(write_card(child).read_text())
    readings = {name: words for name, _, words in table_rows(section(body, "Genome"))}
    trust = round(GENOME["mri_trust"] * 100)
    assert readings["mri_trust"] == f"final ratio = {trust}% scan (MDS) + {100 - trust}% genome"
    assert "![Model Diagnostic Scan: father (left), mother (right)](mds_father_mother.png)" \
        in section(body, "Model Diagnostic Scan (MDS)")
    assert (child / "mri_ratio.png").read_bytes() == \
        (tmp_path / "scan" / "mri_ratio.png").read_bytes()


def test_unhealthy_verdict_lists_reasons_and_flagged_layers(run_folder, tmp_path):
    run = shutil.copytree(run_folder["run"], tmp_path / "run")
    path = run / "health" / "health.json"  # the run's own, its verdict changed
    health = {**json.loads(path.read_text()), "verdict": "unhealthy",
              "reasons": ["interference in layers 1, 3"], "flagged_layers": [1, 3]}
    path.write_text(json.dumps(health))
    _, body = split_card(write_card(run / "child", run).read_text())
    text = section(body, "Health check")
    assert "Verdict: **unhealthy**" in text and "- interference in layers 1, 3" in text
    assert "Flagged layers: 1, 3." in text and "No layer was flagged" not in text


def test_remake_command_in_the_card_gives_a_byte_identical_child(run_folder, card, tmp_path,
                                                                  monkeypatch):
    import shlex

    _, body = split_card(card)
    blocks = re.findall(r"```bash\n(.*?)\n```", section(body, "Reproducibility"), re.S)
    remake = next(shlex.split(b) for b in blocks if b.startswith("darwin merge "))
    assert remake[remake.index("--genome") + 1] == str(run_folder["child"] / "darwin_merge.json")
    monkeypatch.chdir(tmp_path)
    assert main(remake[1:]) == 0
    again = tmp_path / remake[remake.index("--out") + 1]
    original = run_folder["child"] / "model.safetensors"
    assert (again / "model.safetensors").read_bytes() == original.read_bytes()
