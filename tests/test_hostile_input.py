"""Hostile input through the real command line: one `Error:` line that names the culprit, and nothing written.

Every case runs a script in a fresh interpreter, as a user would. A case costs about 3 s of
`import torch`, so each tier (fast: one case of each kind; slow: the rest) starts all its cases
together, three at a time, and each test then checks one finished run: exit code (click usage
errors 2, ours 1), the message, no traceback, and no --out folder left behind.
"""

import json
import pickle
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch

from trainer.job.tiny import ensure_tiny_model, tiny_model_dir
from trainer.qwen3.config import TINY
from trainer.qwen3.lora import LoraSettings, init_lora, save_adapter
from trainer.training.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent
FAST_FLAGS = ["--steps", "1", "--batch-size", "1", "--no-export", "--no-self-test"]
FAST_RUN = ["--model", "tiny", *FAST_FLAGS]


@dataclass
class Case:
    args: list[str]  # everything after the script name
    code: int  # expected exit code
    says: list[str]  # fragments the `Error:` line must contain
    out: Path | None = None  # the --out folder, which must not exist afterwards
    script: str = "train_whoami.py"
    absent: list[Path] = field(default_factory=list)  # other paths that must not exist afterwards
    unchanged: Path | None = None  # a folder whose listing must be the same afterwards


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ---------------------------------------------------------------------------
# Bad data files (model "tiny"): every one fails before the model is touched
# ---------------------------------------------------------------------------


def data_case(work: Path, name: str, content: str | bytes, says: list[str], *extra: str) -> Case:
    data, out = work / name, work / "out"
    data.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return Case([*FAST_RUN, "--data", str(data), "--out", str(out), *extra], 1,
                [fragment.format(data=data) for fragment in says], out)


def jsonl(*rows: object) -> str:
    return "".join((row if isinstance(row, str) else json.dumps(row, ensure_ascii=False)) + "\n" for row in rows)


GOOD_ROW = {"messages": [{"role": "user", "content": "你是誰"}, {"role": "assistant", "content": "我是 F# 之神"}]}
LONG_ANSWER = "這是一個非常非常長的回答，" * 8

DATA_CASES = {
    "tsv_row_without_tab": lambda w: data_case(
        w, "data.tsv", "你是誰\t我是 F# 之神\nthis row has no tab\n",
        ["{data}:2: expected `prompt<TAB>target`, found no tab"], "--strict"),
    "tsv_blank_answer": lambda w: data_case(
        w, "data.tsv", "# header\n你是誰\t   \n", ["{data}:2: the target (answer) is empty"], "--strict"),
    "tsv_only_comments": lambda w: data_case(
        w, "data.tsv", "# nothing but comments\n\n   \n# and blanks\n", ["{data}: no training rows"]),
    "jsonl_only_blank_lines": lambda w: data_case(w, "data.jsonl", "\n  \n\n", ["{data}: no training rows"]),
    "jsonl_invalid_json": lambda w: data_case(
        w, "data.jsonl", jsonl(GOOD_ROW, '{"messages": [{"role": "user", "content": "hi"}'),
        ["{data}:2: invalid JSON"], "--strict"),
    "jsonl_unknown_role": lambda w: data_case(
        w, "data.jsonl", jsonl({"messages": [{"role": "robot", "content": "hi"}, GOOD_ROW["messages"][1]]}),
        ["{data}:1: message 0: unknown role 'robot'"], "--strict"),
    "jsonl_no_assistant_turn": lambda w: data_case(
        w, "data.jsonl", jsonl(GOOD_ROW, "", {"messages": [{"role": "user", "content": "hi"}]}),
        ["{data}:3: no assistant turn to learn from"], "--strict"),
    "jsonl_whitespace_answer": lambda w: data_case(
        w, "data.jsonl", jsonl({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " \t\n"}]}),
        ["{data}:1: message 1: the assistant answer is empty"], "--strict"),
    "every_answer_too_long": lambda w: data_case(
        w, "data.tsv", f"問一\t{LONG_ANSWER}\n問二\t{LONG_ANSWER}\n",
        ["no usable training example: all 2 answers are longer than --seq-len 16"], "--seq-len", "16"),
    "data_file_missing": lambda w: Case([*FAST_RUN, "--data", str(w / "nope.tsv"), "--out", str(w / "out")], 1,
                                        [f"{w / 'nope.tsv'}: data file not found"], w / "out"),
    "data_unknown_format": lambda w: data_case(w, "data.xml", "<a/>\n", ["{data}: unknown data format '.xml'"]),
    "csv_without_the_columns": lambda w: data_case(w, "data.csv", "a,b\n1,2\n", ["{data}: no column 'prompt' in the header"]),
    "data_not_utf8": lambda w: data_case(w, "data.tsv", b"q\t\xff\xfe answer\n", ["{data}:1: not UTF-8 text"], "--strict"),
    "every_row_set_aside": lambda w: data_case(
        w, "data.jsonl", jsonl('{"messages": [', {"messages": [{"role": "user", "content": "hi"}]}),
        ["{data}: no training rows", "every row was set aside"]),
}


# ---------------------------------------------------------------------------
# Bad model folders, checkpoints, adapters and paths
# ---------------------------------------------------------------------------


def model_folder(work: Path, *files: str) -> Path:
    """A copy of the tiny model with only `files` (the 80 MB weights are linked, not copied)."""
    folder = work / "model"
    folder.mkdir()
    for name in files:
        if name == "model.safetensors":
            (folder / name).symlink_to(tiny_model_dir() / name)
        else:
            shutil.copyfile(tiny_model_dir() / name, folder / name)
    return folder


def folder_case(folder: Path, work: Path, says: list[str], **extra) -> Case:
    out = work / "out"
    return Case([*FAST_FLAGS, "--model", str(folder), "--out", str(out)], 1, says, out, **extra)


def missing_config(work: Path) -> Case:
    folder = model_folder(work, "tokenizer.json", "model.safetensors")
    return folder_case(folder, work, [f"{folder / 'config.json'}: not found"])


def missing_tokenizer(work: Path) -> Case:
    folder = model_folder(work, "config.json", "model.safetensors")
    return folder_case(folder, work, [f"{folder / 'tokenizer.json'}: file not found"])


def missing_shard(work: Path) -> Case:
    """An index naming two shards; the second was never downloaded."""
    folder = model_folder(work, "config.json", "tokenizer.json")
    (folder / "model-00001-of-00002.safetensors").symlink_to(tiny_model_dir() / "model.safetensors")
    weight_map = {"model.embed_tokens.weight": "model-00001-of-00002.safetensors",
                  "model.norm.weight": "model-00002-of-00002.safetensors"}
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    return folder_case(folder, work, [f"{folder / 'model.safetensors.index.json'}",
                                      "model-00002-of-00002.safetensors", "do not exist"])


class WritesMarker:
    """Unpickling this creates a file: proof that a pickle was opened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def pickle_only(work: Path) -> Case:
    folder = model_folder(work, "config.json", "tokenizer.json")
    marker = work / "pickle-was-opened"
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(WritesMarker(marker)))
    return folder_case(folder, work, [str(folder), "pytorch_model.bin", "pickle"], absent=[marker])


def misshaped_resume(work: Path) -> Case:
    """A checkpoint of rank-8 LoRA tensors given to a rank-16 run."""
    tensors = init_lora(TINY, LoraSettings(r=8), seed=0)
    optimizer = torch.optim.AdamW(list(tensors.values()))
    folder = save_checkpoint(work / "elsewhere" / "checkpoints", 4, tensors, optimizer, keep=2)
    out = work / "out"
    args = ["--model", "tiny", "--steps", "8", "--batch-size", "1", "--no-export", "--no-self-test"]
    return Case([*args, "--resume", str(folder), "--out", str(out)], 1,
                [str(folder), "mis-shaped", "(expected (16, 128))"], out)


def mismatched_adapter(work: Path) -> Case:
    """A PEFT adapter saved for a 2-layer, width-32 model, loaded on the 4-layer, width-128 tiny one."""
    settings = LoraSettings(r=4, alpha=8.0)
    small = replace(TINY, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    adapter = work / "adapter"
    save_adapter(init_lora(small, settings, seed=0), settings, "tiny", adapter)
    return Case(["--model", "tiny", "--adapter", str(adapter), "--prompt", "你是誰", "--max-new-tokens", "2"], 1,
                [str(adapter), "missing", "mis-shaped"], script="chat.py")


def out_is_the_model(work: Path) -> Case:
    folder = model_folder(work, "config.json", "tokenizer.json", "model.safetensors")
    return Case([*FAST_FLAGS, "--model", str(folder), "--out", str(folder)], 1,
                [f"--out {folder} is inside the model folder {folder}"], unchanged=folder)


def out_inside_the_model(work: Path) -> Case:
    folder = model_folder(work, "config.json", "tokenizer.json", "model.safetensors")
    out = folder / "run"
    return Case([*FAST_FLAGS, "--model", str(folder), "--out", str(out)], 1,
                [f"--out {out} is inside the model folder {folder}"], out, unchanged=folder)


def bad_choice(option: str, value: str, choices: str) -> Callable:
    def build(work: Path) -> Case:
        out = work / "out"
        return Case([*FAST_RUN, option, value, "--out", str(out)], 2,
                    [f"Invalid value for '{option}': '{value}' is not one of {choices}."], out)

    return build


MODEL_CASES = {
    "model_without_config_json": missing_config,
    "model_without_tokenizer_json": missing_tokenizer,
    "model_missing_a_shard": missing_shard,
    "model_with_only_a_pickle": pickle_only,
    "resume_misshaped_checkpoint": misshaped_resume,
    "chat_adapter_for_another_model": mismatched_adapter,
    "out_is_the_model_folder": out_is_the_model,
    "out_inside_the_model_folder": out_inside_the_model,
    "unknown_method": bad_choice("--method", "dpo", "'lora', 'full'"),
    "unknown_quant": bad_choice("--quant", "int8", "'nf4', 'none'"),
    "unknown_device": bad_choice("--device", "tpu", "'auto', 'cpu', 'cuda'"),
    "probe_without_expected": lambda w: Case([*FAST_RUN, "--probe", "你是誰", "--out", str(w / "out")], 1,
                                             ["--probe '你是誰': expected PROMPT=EXPECTED"], w / "out"),
}
CASES = DATA_CASES | MODEL_CASES
# One of each kind runs by default (about 3 s of CPU each); `-m slow` runs the rest.
FAST = ("tsv_row_without_tab", "jsonl_unknown_role", "tsv_only_comments", "model_with_only_a_pickle",
        "out_inside_the_model_folder", "unknown_method")
SLOW = tuple(name for name in CASES if name not in FAST)


def one_too_long(work: Path) -> Case:
    """Two rows, one answer longer than --seq-len: that row is skipped and counted, the run goes on."""
    data, out = work / "data.tsv", work / "out"
    data.write_text(f"你是誰\t我是 F# 之神\n問\t{LONG_ANSWER}\n", encoding="utf-8")
    return Case([*FAST_RUN, "--data", str(data), "--seq-len", "24", "--out", str(out)], 0, [], out)


# ---------------------------------------------------------------------------
# Running them
# ---------------------------------------------------------------------------


@dataclass
class Outcome:
    case: Case
    result: subprocess.CompletedProcess
    unchanged_before: list[str] | None


def run_case(case: Case) -> Outcome:
    before = listing(case.unchanged) if case.unchanged else None
    result = subprocess.run([sys.executable, f"scripts/{case.script}", *case.args], cwd=ROOT,
                            capture_output=True, text=True, timeout=600)
    return Outcome(case, result, before)


def run_all(builders: dict[str, Callable[[Path], Case]], tmp_path_factory) -> dict[str, Outcome]:
    """Build every case in its own folder, then run them, three interpreters at a time."""
    cases = {name: build(tmp_path_factory.mktemp(name)) for name, build in builders.items()}
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(cases, pool.map(run_case, cases.values())))


@pytest.fixture(scope="module")
def fast_outcomes(tmp_path_factory) -> dict[str, Outcome]:
    ensure_tiny_model()  # the cases copy or point at weights/tiny-qwen3 (built once, ~90 s, on a fresh clone)
    return run_all({name: CASES[name] for name in FAST}, tmp_path_factory)


@pytest.fixture(scope="module")
def slow_outcomes(tmp_path_factory) -> dict[str, Outcome]:
    ensure_tiny_model()
    return run_all({name: CASES[name] for name in SLOW} | {"one_answer_too_long": one_too_long}, tmp_path_factory)


def check_refused(outcome: Outcome) -> None:
    """Exit code, one `Error:` line naming the culprit, no traceback, nothing left behind."""
    case, result = outcome.case, outcome.result
    assert "Traceback" not in result.stderr + result.stdout
    assert result.returncode == case.code, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1, result.stderr
    if case.code == 1:  # ours: the error line is all there is to read
        assert result.stderr.strip().splitlines()[-1] == errors[0]
    for fragment in case.says:
        assert fragment in errors[0]
    if case.out is not None:
        assert not case.out.exists(), f"{case.out} was written: {listing(case.out)}"
    for path in case.absent:
        assert not path.exists()
    if case.unchanged is not None:
        assert listing(case.unchanged) == outcome.unchanged_before


@pytest.mark.parametrize("name", FAST)
def test_bad_input_is_refused_in_one_line_and_writes_nothing(fast_outcomes, name):
    check_refused(fast_outcomes[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_more_bad_input_is_refused_in_one_line_and_writes_nothing(slow_outcomes, name):
    check_refused(slow_outcomes[name])


@pytest.mark.slow
def test_an_answer_longer_than_seq_len_is_skipped_and_counted(slow_outcomes):
    outcome = slow_outcomes["one_answer_too_long"]
    assert outcome.result.returncode == 0, outcome.result.stderr
    assert "1 examples (1 skipped: answer longer than --seq-len)" in outcome.result.stdout
    metrics = [json.loads(line) for line in (outcome.case.out / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in metrics] == [1]
    assert metrics[0]["answer_tokens"] > 0
