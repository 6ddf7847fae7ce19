"""What a user reads while a run goes: the stage with block k of n and the time since the start, each
iteration's criterion against its target, and all of it in run.log."""
import re

from reactforge.engine.progress import Progress
from reactforge.workflows.active_learning import BlockReport


class _Engine:
    reference_calls = 3

    def stats(self):
        return {"reference": {"queued": 1, "running": 2, "done": 5, "failed": 0, "cached": 0,
                              "blocks_running": 1, "blocks_pending": 1}}


def test_stage_context_elapsed_and_run_log(tmp_path, capsys):
    log = tmp_path / "run.log"
    with Progress(_Engine(), "demo", live=False, log_path=log) as progress:
        progress.set_context("block 6 (7 of 7, neb)")
        progress.set_stage("iteration 2 of 6, NEBs over 2 permutation(s)")
        report = BlockReport("neb", criterion="max |E_MLFF − E_ref| on sampled images (eV) < 0.05",
                             iterations=2, criterion_value=0.0834, labels_added=12)
        progress.log(report.status_line(6))
    printed = capsys.readouterr().out
    text = log.read_text()
    stage = re.search(r"\[0:00:0\d\] block 6 \(7 of 7, neb\): iteration 2 of 6, NEBs over 2 permutation\(s\) \| "
                      r"reference \[1 up, 1 pending\] queued 1 running 2 done 5", text)
    assert stage, text
    line = "neb iteration 2 of 6: max |E_MLFF − E_ref| on sampled images (eV) < 0.05; now 0.0834: not met, 12 labels"
    assert line in text and line in printed
    assert text.count("\n") == len(text.splitlines()) and all(ln.startswith("[2") for ln in text.splitlines())


def test_live_view_still_writes_run_log(tmp_path):
    """On a terminal the table is drawn by rich; run.log gets the stages and messages all the same."""
    log = tmp_path / "run.log"
    progress = Progress(_Engine(), "demo", live=True, log_path=log)
    progress.set_context("validation")
    progress.set_stage("reference NEBs for 2 reaction(s)")
    progress.log("H2-migration: converged in 12 steps")
    text = log.read_text()
    assert "validation: reference NEBs for 2 reaction(s)" in text and "H2-migration: converged" in text


def test_an_unwritable_log_warns_once_and_the_run_goes_on(tmp_path, capsys):
    progress = Progress(_Engine(), "demo", live=False, log_path=tmp_path / "missing" / "run.log")
    progress.log("one")
    progress.log("two")
    err = capsys.readouterr().err
    assert err.count("not written") == 1 and progress.log_path is None
