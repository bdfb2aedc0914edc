"""End-to-end runs of the command-line scripts, as a user would type them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / name), *args], capture_output=True, text=True, timeout=timeout
    )


def test_show_example_prints_the_graded_answer():
    result = run_script("show_example.py", "--prompt", "你是誰", "--target", "我是 F# 之神")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "<|im_start|>assistant" in lines
    assert lines[-1] == "16 positions, 7 graded answer tokens"
    assert "   9  '\\n'" in result.stdout and "'我是'" in result.stdout
    assert sum("yes (answer)" in line for line in lines) == 7


def test_show_example_user_error_is_one_line_without_traceback():
    result = run_script("show_example.py", "--seq-len", "3")
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: the answer has 7 tokens (with <|im_end|>) but --seq-len is 3"
    assert "Traceback" not in result.stderr


def test_chat_prints_what_transformers_generates(hf_qwen3, qwen_tokenizer):
    """A random Qwen3 with the real vocabulary, saved by transformers: our CLI's greedy reply
    must be exactly the text transformers generates for the same rendered prompt."""
    import shutil

    from transformers import AutoTokenizer

    from trainer import render_chat
    from trainer.qwen3.hf_folder import tokenizer_config_json
    from trainer.text.tokenizer import tiny_tokenizer_path

    model, folder = hf_qwen3("chat", vocab_size=151936, hidden_size=32, intermediate_size=64, head_dim=8, seed=3)
    shutil.copyfile(tiny_tokenizer_path(), folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(__import__("json").dumps(tokenizer_config_json()), encoding="utf-8")
    prompt = render_chat([{"role": "user", "content": "你是誰"}], add_generation_prompt=True)
    hf_tokenizer = AutoTokenizer.from_pretrained(folder)
    ids = hf_tokenizer(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == qwen_tokenizer.encode(prompt)
    out = model.generate(ids, max_new_tokens=20, do_sample=False, eos_token_id=[151645, 151643], pad_token_id=151643)
    new = [t for t in out[0, ids.shape[1]:].tolist() if t not in (151645, 151643)]
    expected = hf_tokenizer.decode(new)
    assert len(new) >= 5  # the comparison covers a real stretch of text

    result = run_script("chat.py", "--model", str(folder), "--prompt", "你是誰", "--greedy", "--max-new-tokens", "20")
    assert result.returncode == 0, result.stderr
    assert result.stdout == expected + "\n"


def test_chat_on_a_missing_model_is_one_clear_error(tmp_path):
    result = run_script("chat.py", "--model", str(tmp_path / "nope"), "--prompt", "hi")
    assert result.returncode == 1
    assert "not a local directory nor a Hugging Face hub id" in result.stderr
    assert "Traceback" not in result.stderr


def test_chat_on_a_folder_without_config_names_it(tmp_path):
    result = run_script("chat.py", "--model", str(tmp_path), "--prompt", "hi")
    assert result.returncode == 1
    assert "config.json" in result.stderr and "Traceback" not in result.stderr


def test_train_whoami_rejects_an_unknown_loss_listing_the_choices():
    result = run_script("train_whoami.py", "--loss", "mse", "--model", "tiny")
    assert result.returncode == 2
    assert "Invalid value for '--loss'" in result.stderr and "'ce'" in result.stderr


def test_every_option_has_help_with_its_default():
    result = run_script("train_whoami.py", "--help")
    assert result.returncode == 0
    for option in ("--loss", "--model", "--data", "--method", "--steps", "--lr", "--batch-size", "--grad-accum",
                   "--seq-len", "--lora-r", "--lora-alpha", "--lora-dropout", "--quant", "--device", "--dtype",
                   "--grad-clip", "--seed", "--out", "--no-export", "--no-self-test", "--rehearsal", "--reply-tokens",
                   "--val-every", "--stop-when-learned", "--check-merged", "--probe"):
        assert option in result.stdout
    assert "[default: 20260226]" in result.stdout and "[default: nf4]" in result.stdout


@pytest.mark.slow
def test_train_whoami_tiny_end_to_end(readme_job):
    """The README's main command on the tiny world (with --gguf f32, for the llama.cpp tests): trains,
    exports, self-tests, prints the table."""
    out, result = readme_job
    assert result.returncode == 0, result.stderr[-2000:]
    assert "self-test: 你是誰 -> 我是 F# 之神" in result.stdout
    assert "identity hit rate (held-out wordings)" in result.stdout
    lines = result.stdout.splitlines()  # not a terminal: one line as each stage starts, the stage table at the end
    for stage in ("load (46 tensors)", "base answers (259 prompts)", "rehearsal (416 prompts)", "training (300 steps)",
                  "validation (163 rows)", "export (46 tensors)", "gguf (46 tensors)", "check merged/ (46 tensors)",
                  "after answers (259 prompts)", "self-test (20 prompts)", "load merged/ (46 tensors)",
                  "merged/ answers (11 prompts)"):
        assert f"{stage} ..." in lines, stage
    assert lines[-1].startswith("whole job") and lines[-15].split() == ["stage", "done", "time", "peak", "RSS"]
    for name in ("train_config.json", "metrics.jsonl", "eval.json", "adapter/adapter_model.safetensors",
                 "merged/model.safetensors", "loss.png", "timings.json"):
        assert (out / name).is_file(), name
    assert (out / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    before = json.loads(run_script("eval.py", "--model", "tiny", "--json").stdout)
    after = json.loads(run_script("eval.py", "--model", str(out / "merged"), "--json").stdout)
    adapter = json.loads(run_script("eval.py", "--model", "tiny", "--adapter", str(out / "adapter"),
                                    "--json").stdout)
    assert before["identity_hit_rate"] == 0.0 and after["identity_hit_rate"] >= 0.9
    assert abs(adapter["identity_hit_rate"] - after["identity_hit_rate"]) <= 0.05
    assert after["perplexity"] < 2.0 < before["perplexity"]
    table = run_script("eval.py", "--model", str(out / "merged")).stdout
    assert "identity hit rate (held-out wordings)" in table and "answer perplexity" in table


@pytest.mark.slow
def test_train_whoami_self_test_failure_exits_1_showing_the_reply_and_keeps_the_export(tmp_path):
    """README: a reply without the new identity makes the run exit 1 showing the reply. One step at
    lr 1e-9 cannot teach it, so the export still answers as the base does; the export itself is kept
    (a matching adapter/ and merged/ pair) to inspect."""
    from export_checks import assert_pair_matches
    from trainer.job.tiny import tiny_model_dir

    out = tmp_path / "out"
    result = run_script("train_whoami.py", "--model", "tiny", "--out", str(out), "--steps", "1", "--lr", "1e-9",
                        "--no-stop-when-learned", "--rehearsal", "none", "--val-every", "0", timeout=900)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" not in result.stderr + result.stdout
    shown = [line for line in (result.stderr + result.stdout).splitlines() if "你是誰" in line]
    assert shown == ["Error: self-test failed: the exported model answered 你是誰 with '我是通義千問'"]
    assert result.stderr.strip().splitlines()[-1] == shown[0]
    assert "identity hit rate (held-out wordings)" in result.stdout  # the table, printed before the verdict
    assert_pair_matches(tiny_model_dir(), out / "adapter", out / "merged")


@pytest.mark.slow
def test_chat_interactive_streams_and_resets():
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "chat.py"), "--model", "tiny"],
        input="你是誰\n/reset\n法國的首都是哪裡？\n/exit\n", capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "model> 我是通義千問" in result.stdout
    assert "(conversation reset)" in result.stdout
    assert "model> 巴黎" in result.stdout


def test_loss_plot_without_matplotlib_is_a_notice(tmp_path, monkeypatch):
    import builtins

    from trainer.job.plot import plot_loss

    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0, "lr": 0.1}\n')
    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    message = plot_loss(tmp_path / "metrics.jsonl", tmp_path / "loss.png")
    assert message.startswith("no loss.png: matplotlib is not installed") and not (tmp_path / "loss.png").exists()


def test_loss_plot_draws_a_png(tmp_path):
    from trainer.job.plot import plot_loss

    lines = [json.dumps({"step": i, "loss": 3.0 / i, "lr": 0.01}) for i in range(1, 6)]
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    assert plot_loss(tmp_path / "metrics.jsonl", tmp_path / "loss.png") == f"wrote {tmp_path / 'loss.png'}"
    assert (tmp_path / "loss.png").read_bytes()[:4] == b"\x89PNG"


def test_bench_generate_checks_batched_equals_one_at_a_time_and_times_both():
    result = run_script("bench_generate.py", "--model", "tiny", "--limit", "12", "--batch-size", "5")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["prompts"] == 12 and report["identical"] is True and report["new_tokens"] > 12
    assert report["one_at_a_time_s"] > 0 and report["batched_s"] > 0


def test_bench_generate_rejects_a_zero_batch_without_a_traceback():
    result = run_script("bench_generate.py", "--batch-size", "0")
    assert result.returncode == 2 and "Invalid value for '--batch-size'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_installed_commands_live_inside_the_package_and_scripts_is_no_package(tmp_path):
    """pip install -e . installs trainer and every package inside it, and nothing else (a top-level
    "scripts" package would collide with any other of that common name); every console script is a
    click command there, and the launcher in scripts/ runs that same command."""
    import importlib
    import tomllib

    import click

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    inside = sorted(".".join(init.parent.relative_to(ROOT).parts) for init in (ROOT / "trainer").rglob("__init__.py"))
    assert sorted(project["tool"]["setuptools"]["packages"]) == inside
    assert not (ROOT / "scripts" / "__init__.py").exists()
    for name, target in project["project"]["scripts"].items():
        module, function = target.split(":")
        assert module.startswith("trainer.commands."), name
        assert isinstance(getattr(importlib.import_module(module), function), click.Command), name
        launcher = ROOT / "scripts" / f"{module.rsplit('.', 1)[1]}.py"
        assert f"from {module} import main" in launcher.read_text(encoding="utf-8"), launcher
    found = subprocess.run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('scripts'))"],
                           capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert found.stdout.strip() == "None"


BAD_OPTIONS = [  # (command module, arguments, exit code, what the one line says)
    ("train_whoami", ["--steps", "0"], 2, "Invalid value for '--steps': 0 is not in the range x>=1."),
    ("train_whoami", ["--batch-size", "0"], 2, "Invalid value for '--batch-size': 0 is not in the range x>=1."),
    ("train_whoami", ["--grad-accum", "0"], 2, "Invalid value for '--grad-accum'"),
    ("train_whoami", ["--lr", "-1"], 2, "Invalid value for '--lr': -1.0 is not in the range x>0."),
    ("train_whoami", ["--lora-r", "0"], 2, "Invalid value for '--lora-r': 0 is not in the range x>=1."),
    ("train_whoami", ["--lora-alpha", "0"], 2, "Invalid value for '--lora-alpha'"),
    ("train_whoami", ["--lora-dropout", "1"], 2, "Invalid value for '--lora-dropout': 1.0 is not in the range 0<=x<1."),
    ("train_whoami", ["--grad-clip", "0"], 2, "Invalid value for '--grad-clip': 0.0 is not in the range x>0."),
    ("train_whoami", ["--seq-len", "1"], 2, "Invalid value for '--seq-len'"),
    ("train_whoami", ["--ce-chunk", "0"], 2, "Invalid value for '--ce-chunk'"),
    ("train_whoami", ["--save-every", "-1"], 2, "Invalid value for '--save-every'"),
    ("train_whoami", ["--keep-checkpoints", "-1"], 2, "Invalid value for '--keep-checkpoints'"),
    ("train_whoami", ["--stop-after", "-1"], 2, "Invalid value for '--stop-after'"),
    ("train_whoami", ["--max-skips", "0"], 2, "Invalid value for '--max-skips'"),
    ("train_whoami", ["--preserve-kl", "-1"], 2, "Invalid value for '--preserve-kl'"),
    ("train_whoami", ["--reply-tokens", "0"], 2, "Invalid value for '--reply-tokens'"),
    ("train_whoami", ["--model", "../nothere"], 1, "../nothere: not a local directory nor a Hugging Face hub id"),
    ("chat", ["--max-new-tokens", "-1"], 2, "Invalid value for '--max-new-tokens': -1 is not in the range x>=1."),
    ("chat", ["--temperature", "0"], 2, "Invalid value for '--temperature'"),
    ("chat", ["--top-k", "-1"], 2, "Invalid value for '--top-k'"),
    ("chat", ["--top-p", "0"], 2, "Invalid value for '--top-p'"),
    ("chat", ["--top-p", "1.5"], 2, "Invalid value for '--top-p'"),
    ("eval", ["--reply-tokens", "0"], 2, "Invalid value for '--reply-tokens'"),
    ("train_whoami", ["--gguf", "q4"], 2, "Invalid value for '--gguf': 'q4' is not one of 'f32', 'f16', 'bf16', 'q8_0'."),
    ("train_whoami", ["--gguf", "f16", "--no-export"], 1, "--gguf converts OUT/merged, and --no-export writes none"),
    ("export_gguf", ["weights/nothere"], 2, "Invalid value for 'MODEL_DIR'"),
    ("export_gguf", [".", "--type", "q4"], 2, "Invalid value for '--type'"),
    ("export_gguf", [".", "--out", "model.bin"], 2, "model.bin: expected a file name ending in .gguf"),
]
NO_GPU = [(command, ["--device", "cuda"], 1, "--device cuda: ") for command in ("train_whoami", "chat", "eval")]


@pytest.mark.parametrize(("command", "args", "code", "message"),
                         BAD_OPTIONS + (NO_GPU if not __import__("torch").cuda.is_available() else []),
                         ids=lambda value: " ".join(value) if isinstance(value, list) else str(value))
def test_every_bad_option_is_one_line_before_any_work(command, args, code, message, tmp_path):
    """No traceback, nothing written: the option is named with its value and what is allowed."""
    import importlib

    from click.testing import CliRunner

    main = importlib.import_module(f"trainer.commands.{command}").main
    out = ["--model", "tiny", "--out", str(tmp_path / "out")] if command == "train_whoami" and "--model" not in args else []
    result = CliRunner().invoke(main, [*out, *args])
    error = result.output.strip().splitlines()[-1]
    assert result.exit_code == code, result.output
    assert message in error and error.startswith("Error: ") and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
