"""One coordinator per run directory: the lock, held across processes, released by death."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from reactforge.engine.lock import RunDirLocked, RunLock

HOLD = "from reactforge.engine.lock import RunLock; import sys, time; RunLock(sys.argv[1]).acquire(); " \
       "print('held', flush=True); time.sleep(600)"


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirLocked, match=f"pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    # SIGKILL released it: the resume takes the directory
    with RunLock(tmp_path):
        assert f"pid {os.getpid()}" in (tmp_path / RunLock.NAME).read_text()


def test_the_lock_is_released_on_exit_of_the_context(tmp_path):
    with RunLock(tmp_path):
        pass
    with RunLock(tmp_path):
        pass
