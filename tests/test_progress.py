"""Progress in a log file: rich draws its bars there only at the end, so plain lines are
written as the work goes (progress.py)."""

from __future__ import annotations

from darwin_merge import progress


def test_a_log_gets_plain_progress_lines_as_the_work_goes(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY", 0.0)  # a line at every update
    assert list(progress.track(range(3), 3, "counting", enabled=True)) == [0, 1, 2]
    lines = [line for line in capsys.readouterr().err.splitlines() if "counting" in line]
    assert [line.split(" (")[0] for line in lines] == [
        "counting: 1/3", "counting: 2/3", "counting: 3/3"]


def test_no_line_before_its_time_and_none_from_a_disabled_bar(monkeypatch, capsys):
    monkeypatch.setattr(progress, "LOG_EVERY", 3600.0)
    list(progress.track(range(3), 3, "counting", enabled=True))
    list(progress.track(range(3), 3, "quiet", enabled=False))
    err = capsys.readouterr().err
    assert "counting:" not in err and "quiet" not in err
