"""The job's stages: timed, peak memory measured per stage, lines in a log, the summary and timings.json."""

import json
import time

import pytest
import torch

from trainer.job.checks import dense_gb, merged_check_due
from trainer.job.stages import CLEAR_REFS, Stages, peak_rss_bytes, stage_table
from trainer.qwen3.config import QWEN3_4B_INSTRUCT_2507, TINY

MB = 2**20


def touch(size: int) -> bytearray:
    """size bytes, every page written, so they count as resident."""
    block = bytearray(size)
    for offset in range(0, size, 4096):
        block[offset] = 1
    return block


def resettable() -> bool:
    try:
        CLEAR_REFS.write_text("5")
        return True
    except OSError:
        return False


def test_a_log_gets_one_line_per_stage_and_the_summary_every_stage(tmp_path):
    lines = []
    stages = Stages(lines.append, progress=False, cuda=False)
    with stages.stage("load", total=3, unit="tensor") as bar:
        bar.update(3)
    for _ in range(2):
        with stages.stage("validation", total=5, unit="row", transient=True) as bar:
            bar.update(5)
            time.sleep(0.01)
    with stages.stage("examples"):
        pass
    assert lines == ["load (3 tensors) ...", "validation (5 rows) ...", "validation (5 rows) ...",
                     "examples ..."]
    stages.finish(tmp_path / "timings.json")
    written = json.loads((tmp_path / "timings.json").read_text(encoding="utf-8"))
    assert [s["stage"] for s in written["stages"]] == ["load", "validation", "examples"]
    validation = written["stages"][1]
    assert validation["runs"] == 2 and validation["count"] == 10 and validation["seconds"] >= 0.02
    assert written["job"]["seconds"] >= validation["seconds"] and written["job"]["peak_rss_gb"] > 0
    assert lines[-1].splitlines()[0].split() == ["stage", "done", "time", "peak", "RSS"]
    assert lines[-1].splitlines()[-1].startswith("whole job")


@pytest.mark.skipif(not resettable(), reason="the RSS peak can be reset on Linux only")
def test_each_stage_has_its_own_peak_and_a_stage_inside_another_counts_for_both():
    stages = Stages(lambda line: None, progress=False, cuda=False)
    with stages.stage("training"):
        with stages.stage("validation", transient=True):
            block = touch(300 * MB)
            del block
    with stages.stage("export"):
        pass
    times = stages.times
    assert times["validation"].peak_rss_gb - times["export"].peak_rss_gb > 0.25
    assert times["training"].peak_rss_gb >= times["validation"].peak_rss_gb
    assert stages.peak() >= times["validation"].peak_rss_gb and stages.peak("export") == times["export"].peak_rss_gb
    assert peak_rss_bytes() < times["validation"].peak_rss_gb * 1e9  # reset after each stage


def test_the_table_has_a_row_per_stage_and_one_for_the_job():
    summary = {"stages": [{"stage": "load", "count": 398, "unit": "tensor", "seconds": 71.66, "peak_rss_gb": 3.4,
                           "peak_cuda_gb": None, "runs": 1}],
               "job": {"seconds": 100.0, "peak_rss_gb": 5.5}}
    assert stage_table(summary, cuda=False).splitlines()[1:] == [
        "load" + " " * 22 + "398 tensors" + " " * 4 + "71.7 s" + " " * 3 + "3.40 GB",
        "whole job" + " " * 31 + "100.0 s" + " " * 3 + "5.50 GB"]


def test_merged_is_asked_only_where_a_dense_copy_fits_within_the_peak_so_far():
    assert round(dense_gb(QWEN3_4B_INSTRUCT_2507, torch.bfloat16), 2) == 8.04
    assert dense_gb(TINY, torch.float32) == pytest.approx(2 * dense_gb(TINY, torch.bfloat16))
    due, why = merged_check_due("auto", 8.04, 5.6)
    assert not due and why == ("a dense copy (8.04 GB) would exceed the job's peak so far (5.60 GB); "
                               "--check-merged on runs it anyway")
    assert merged_check_due("auto", 0.08, 1.2) == (True, "a dense copy (0.08 GB) fits within the job's peak so far (1.20 GB)")
    assert merged_check_due("on", 8.04, 5.6) == (True, "--check-merged on")
    assert merged_check_due("off", 0.08, 1.2) == (False, "--check-merged off")
