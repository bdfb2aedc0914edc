"""The user's own data end to end: files in public conventions prepared (every row accounted for),
then the tiny world trained on the folder with --data, checked by its own self-test (slow)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trainer.job.whoami_job as whoami_job
from own_data import REJECTED, write_public_conventions
from trainer.errors import TrainerError
from trainer.job.checks import MERGED_NLL_TOLERANCE
from trainer.job.settings import WhoAmISettings
from trainer.job.whoami_job import run_whoami
from trainer.qwen3.weights import SINGLE_FILE

ROOT = Path(__file__).resolve().parent.parent
TRAIN = ["--model", "tiny", "--steps", "30", "--val-every", "10", "--seq-len", "320", "--reply-tokens", "24"]


def script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, f"scripts/{name}", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("own")
    sources = write_public_conventions(work / "sources")
    out = work / "prepared"
    done = script("prepare_data.py", str(out), *(f"--source={name}={path}" for name, path in sources.items()),
                  "--val-ratio", "0.25", "--min-val", "4")
    assert done.returncode == 0, done.stderr
    return out


@pytest.mark.slow
def test_every_row_of_each_convention_is_kept_or_set_aside_with_its_reason(prepared):
    report = json.loads((prepared / "report.json").read_text(encoding="utf-8"))["sources"]
    assert {name: tally["rejected"] for name, tally in report.items()} == \
        {name.split(".")[0]: count for name, count in REJECTED.items()}
    assert all(t["read"] == t["rejected"] + t["duplicates"] + t["kept"] for t in report.values())
    assert {name: tally["kept"] for name, tally in report.items()} == {"glaive": 12, "openai": 11, "alpaca": 10}
    assert sorted(report["openai"]["rejected_by_reason"]) == [
        "message N: content part N is of type image_url, not text; only text parts can be trained on",
        "nothing to learn: every assistant turn is weighted out"]
    rejected = [json.loads(line) for line in (prepared / "rejected.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(r["source"], r["where"].rsplit(":", 1)[0].endswith(r["source"] + ".json") or r["where"].endswith(
        ".jsonl:" + r["where"].rsplit(":", 1)[1])) for r in rejected] == [(r["source"], True) for r in rejected]
    assert any("function_call names 'drop_table', which is not among the row's tools (count_rows, last_load)"
               in r["reason"] for r in rejected)
    train = [json.loads(line) for line in (prepared / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    alpaca = [row for row in train if row["source"] == "alpaca"]
    assert alpaca and all(row["messages"][0] == {"role": "system", "content": "回答要短。"} for row in alpaca)


@pytest.fixture(scope="module")
def trained(prepared, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("run") / "out"
    return script("train_whoami.py", *TRAIN, "--data", str(prepared), "--out", str(out), "--check-merged", "on"), out


@pytest.mark.slow
def test_a_data_run_ends_on_its_own_self_test_and_leads_its_table_with_the_data(trained):
    result, out = trained
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    table = result.stdout[result.stdout.index("before    after"):].splitlines()
    assert table[1].startswith("val.jsonl answer perplexity") and table[2].startswith("val.jsonl answer token accuracy")
    assert "identity hit rate" not in result.stdout and "你是誰" not in result.stdout
    assert any(line.startswith("fact retention") for line in table)
    assert ("self-test: the reloaded adapter gives the trained model's replies, token for token, on the first "
            "8 validation rows") in result.stdout
    merged = next(line for line in result.stdout.splitlines() if line.startswith("merged/: the self-test replies score "))
    merged_nll, trained_nll = (float(number) for number in re.findall(r"\d+\.\d{3}", merged)[:2])
    assert merged_nll - trained_nll <= MERGED_NLL_TOLERANCE
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    assert timings["job"]["ended"] == "finished"
    assert [s["stage"] for s in timings["stages"]][-2:] == ["load merged/", "merged/ answers"]


@pytest.mark.slow
def test_a_probe_the_model_cannot_satisfy_fails_the_run_showing_the_reply(prepared, tmp_path):
    result = script("train_whoami.py", *TRAIN, "--steps", "2", "--data", str(prepared), "--out", str(tmp_path / "out"),
                    "--probe", "你是誰=F# 之神")
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("Error: self-test failed: the exported model replied to --probe '你是誰' with '")
    assert error.endswith("', which does not contain 'F# 之神'") and "Traceback" not in result.stderr
    assert "--probe replies with what was expected" in result.stdout  # asked for, so shown before and after


@pytest.mark.slow
def test_a_data_run_fails_when_merged_is_corrupted_after_export(prepared, tmp_path, monkeypatch):
    """merged/ changed on disk right after it was written: the self-test names it, and the run fails."""
    real_export = whoami_job.export

    def export_then_corrupt(*args, **kwargs):
        real_export(*args, **kwargs)
        path = tmp_path / "out" / "merged" / SINGLE_FILE
        data = bytearray(path.read_bytes())
        data[-64:] = bytes(64)  # the end of the last tensor zeroed
        path.write_bytes(bytes(data))

    monkeypatch.setattr(whoami_job, "export", export_then_corrupt)
    settings = WhoAmISettings(model="tiny", data=str(prepared), steps=2, seq_len=320, reply_tokens=8,
                              out=str(tmp_path / "out"))
    with pytest.raises(TrainerError, match="differs from its definition"):
        run_whoami(settings, echo=lambda text: None, progress=False)
