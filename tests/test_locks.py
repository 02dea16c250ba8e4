"""The search's single-worker lock (filelock): a second `darwin evolve` in the same RUN_DIR
is refused while the first holds it, and the folder is free again once it is released."""

from __future__ import annotations

import subprocess
import sys

import pytest

from darwin_merge.errors import OutputError
from darwin_merge.evolve.run import _single_worker_lock

HOLD = """
import sys
from pathlib import Path
from darwin_merge.evolve.run import _single_worker_lock
lock = _single_worker_lock(Path(sys.argv[1]))
print("held", flush=True)
sys.stdin.readline()
"""


def test_a_second_search_in_the_same_folder_is_refused_until_the_first_ends(tmp_path):
    first = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert first.stdout.readline() == "held\n"
        with pytest.raises(OutputError, match="another `darwin evolve` is running"):
            _single_worker_lock(tmp_path)
    finally:
        first.communicate("done\n")
    assert first.returncode == 0
    lock = _single_worker_lock(tmp_path)  # the first process ended: its lock died with it
    assert lock.is_locked
    lock.release()
