"""The benchmark tools: random checkpoints in the Hugging Face layout, and bench.py's runs."""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from trainer.qwen3.config import TINY, load_config
from trainer.qwen3.weights import INDEX_FILE, expected_shapes, load_weights

ROOT = Path(__file__).resolve().parent.parent


def run_script(name: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / name), *args],
                          capture_output=True, text=True, timeout=timeout)


def make_checkpoint(folder: Path, *args: str) -> Path:
    result = run_script("make_random_checkpoint.py", "--shape", "tiny", str(folder), *args)
    assert result.returncode == 0, result.stderr
    return folder


def raw_tensors(folder: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a sharded checkpoint, as stored (bf16), read with safetensors directly."""
    weight_map = json.loads((folder / INDEX_FILE).read_text())["weight_map"]
    tensors = {}
    for file in sorted(set(weight_map.values())):
        with safe_open(folder / file, framework="pt") as reader:
            tensors.update({name: reader.get_tensor(name) for name in reader.keys()})
    return tensors


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """A tiny random checkpoint cut into several shards: 1 MB each, about two layers; the embedding alone is 39 MB."""
    return make_checkpoint(tmp_path_factory.mktemp("random") / "tiny", "--max-shard-gb", "0.001")


def test_random_checkpoint_is_sharded_and_loads_with_our_loader(tiny_checkpoint):
    shards = sorted(tiny_checkpoint.glob("model-*-of-*.safetensors"))
    assert len(shards) >= 3 and shards[0].name.endswith(f"-of-{len(shards):05d}.safetensors")
    config = load_config(tiny_checkpoint)
    assert config == TINY
    weights = load_weights(tiny_checkpoint, config)
    assert list(weights) == list(expected_shapes(TINY))
    index = json.loads((tiny_checkpoint / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == sum(t.numel() * 2 for t in weights.values())  # bf16 on disk
    assert torch.equal(weights["model.norm.weight"], torch.ones(TINY.hidden_size))
    embedding = weights["model.embed_tokens.weight"]
    assert abs(float(embedding.std()) - 0.02) < 2e-4 and abs(float(embedding.mean())) < 1e-4


def test_random_checkpoint_loads_in_transformers_with_the_same_values(tiny_checkpoint):
    from transformers import Qwen3ForCausalLM

    model = Qwen3ForCausalLM.from_pretrained(tiny_checkpoint, dtype=torch.float32)
    ours = load_weights(tiny_checkpoint, load_config(tiny_checkpoint))
    theirs = dict(model.named_parameters())
    assert set(theirs) == set(ours)
    assert all(torch.equal(theirs[name], ours[name]) for name in ours)
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied, as in the presets


def test_sharding_does_not_change_the_tensors(tiny_checkpoint, tmp_path):
    whole = raw_tensors(make_checkpoint(tmp_path / "whole"))
    assert len(list((tmp_path / "whole").glob("model-*.safetensors"))) == 1
    sharded = raw_tensors(tiny_checkpoint)
    assert whole.keys() == sharded.keys()
    assert all(whole[name].dtype == torch.bfloat16 and torch.equal(whole[name], sharded[name]) for name in whole)
    other_seed = raw_tensors(make_checkpoint(tmp_path / "seed1", "--seed", "1"))
    assert not torch.equal(other_seed["model.embed_tokens.weight"], whole["model.embed_tokens.weight"])


def bench_json(*args: str, timeout: int = 300, script: str = "bench.py") -> dict:
    result = run_script(script, "--json", *args, timeout=timeout)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def bench():
    """scripts/bench.py as a module (it imports make_random_checkpoint from its own folder)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return importlib.import_module("bench")
    finally:
        sys.path.remove(str(ROOT / "scripts"))


def test_bench_ours_prints_finite_numbers():
    row = bench_json("--shape", "tiny", "--steps", "2", "--warmup", "1", "--stack", "ours")
    assert row["stack"] == "ours" and row["mem_kind"] == "peak RSS"
    assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0 and len(row["step_s_all"]) == 2
    assert row["tokens_per_s"] * row["step_s"] == pytest.approx(4 * 256)  # 4 rows of 256 tokens a step
    # Counted by hand for tiny (hidden 128, inner 384, 4 heads of 32, 2 kv heads, 4 layers), 1,024 tokens.
    # Per layer: frozen 4 x tokens x 196,608 (sum of in x out over the 7 projections), LoRA 6 x tokens x r16
    # x 2,432 (sum of in + out), attention 12 x 131,584 causal pairs x head_dim 32 x 4 heads. Then the head
    # on the 124 answer labels (31 a row): 4 x 124 x hidden 128 x vocab 151,936.
    per_layer = 4 * 1024 * 196_608 + 6 * 1024 * 16 * 2_432 + 12 * 131_584 * 32 * 4
    assert row["step_flops"] == 4 * per_layer + 4 * 124 * 128 * 151_936 == 14_632_091_648
    assert row["useful_gflops"] * row["step_s"] == pytest.approx(14.632091648)
    assert 0 < row["peak_mem_bytes"] < 8e9
    # Weights ~ N(0, 0.02) give near-zero logits, so the first loss is about ln(vocab).
    assert row["loss_first"] == pytest.approx(math.log(TINY.vocab_size), abs=0.05)
    # LoRA r16 on 4 layers x 7 projections: (r * in + out * r) each.
    assert row["trainable"] == 4 * 16 * (2 * 128 + 2 * 128 + 2 * (128 + 64) + 2 * (128 + 384) + (384 + 128))


def test_bench_load_counts_packed_and_dense_bytes(tiny_checkpoint):
    """Counted by hand for tiny: float32 embedding (151,936 x 128) and norms (4 x (128 + 128 + 32 + 32) + 128);
    per layer 196,608 projection weights at 4 bits, a uint8 scale per block of 64, and a float32 scale
    per 256 of those (13 blocks over the seven projections)."""
    report = bench_json(str(tiny_checkpoint), "--quant", "nf4", "--dtype", "float32", script="bench_load.py")
    dense = 4 * (151_936 * 128 + 4 * (128 + 128 + 32 + 32) + 128)
    packed = 4 * (196_608 // 2 + 196_608 // 64 + 13 * 4)
    assert (report["dense_bytes"], report["packed_bytes"]) == (dense, packed) == (77_796_864, 405_712)
    assert report["loaded_bytes"] == 78_202_576 < report["peak_rss_bytes"]
    assert report["file_bytes"] == sum(p.stat().st_size for p in tiny_checkpoint.glob("model-*.safetensors"))


def test_bench_load_reports_in_words_and_refuses_a_missing_gpu_in_one_line(tiny_checkpoint):
    result = run_script("bench_load.py", str(tiny_checkpoint), "--dtype", "float32")
    assert result.returncode == 0, result.stderr
    first, held, peak = result.stdout.strip().splitlines()
    assert first.startswith(f"loaded {tiny_checkpoint} (") and "with --quant none --dtype float32 on cpu in" in first
    # float32: the 77,796,864 bytes of embedding and norms above, plus 4 x 196,608 projection weights x 4 bytes
    assert held == "  loaded model bytes: 0.081 GB (NF4 0.000 GB + dense 0.081 GB)"
    assert peak.startswith("  peak RSS:") and "x loaded bytes" in peak
    if not torch.cuda.is_available():
        refused = run_script("bench_load.py", str(tiny_checkpoint), "--device", "cuda")
        assert refused.returncode == 1 and refused.stderr == "Error: --device cuda: no CUDA device is visible to torch\n"


@pytest.mark.parametrize("option", ["--steps", "--batch-size", "--seq-len"])
def test_bench_refuses_sizes_below_one(option):
    result = run_script("bench.py", option, "0", "--stack", "ours")
    assert result.returncode == 2 and f"Invalid value for '{option}'" in result.stderr


def test_bench_refuses_4b_training_on_cpu_in_one_line():
    result = run_script("bench.py", "--shape", "4b", "--stack", "ours")
    assert result.returncode == 1
    assert result.stderr.strip().startswith("Error: --shape 4b trains only with --device cuda")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bench_both_prints_both_rows_and_the_ratios():
    result = run_script("bench.py", "--shape", "tiny", "--steps", "2", "--warmup", "1", "--stack", "both")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[3:]}
    assert set(rows) == {"ours", "reference", "ours/ref"} and len(rows["ours/ref"]) == 2
    # Same weights, rows and LoRA A: transformers + peft must see the same losses as we do.
    ours, reference = ([float(v) for v in rows[stack][-2:]] for stack in ("ours", "reference"))
    assert ours == pytest.approx(reference, abs=2e-4)


def bench_row(stack: str, tokens_per_s: float, peak_mem_bytes: int, useful_gflops: float) -> dict:
    return {"stack": stack, "shape": "tiny", "device": "cpu", "dtype": "float32", "quant": "none",
            "batch_size": 4, "seq_len": 256, "grad_checkpoint": False, "compile": False, "steps": 5, "warmup": 2,
            "step_flops": 14_632_091_648, "mem_kind": "peak RSS", "tokens_per_s": tokens_per_s,
            "step_s": 1024 / tokens_per_s, "first_step_s": 3072 / tokens_per_s, "useful_gflops": useful_gflops, "peak_mem_bytes": peak_mem_bytes,
            "loss_first": 11.93215, "loss_last": 11.89917}


def test_table_shows_known_rows_and_their_ratios(bench):
    """Ours twice as fast on a quarter of the memory: 2.00x and 0.25x, each stack's share of a 200 GFLOPS peak."""
    rows = [bench_row("ours", 2048.0, 500_000_000, 50.0), bench_row("reference", 1024.0, 2_000_000_000, 20.0)]
    assert bench.ratios(rows) == {"tokens_per_s": 2.0, "peak_mem": 0.25}
    lines = bench.table(rows, 200.0).splitlines()
    assert "useful work 14.6 GFLOP a step" in lines[1] and "peak now: 200 GFLOPS" in lines[1]
    assert "torch.compile off" in lines[0]
    assert lines[3].split() == ["ours", "2048.0", "0.500", "1.500", "50.0", "25%", "0.500", "11.93215", "11.89917"]
    assert lines[4].split() == ["reference", "1024.0", "1.000", "3.000", "20.0", "10%", "2.000", "11.93215", "11.89917"]
    assert lines[5].split() == ["ours/ref", "2.00x", "0.25x"]


def test_timed_steps_reports_the_median_step_after_warmup(bench, monkeypatch):
    """Warmup steps count only as the first step and the first loss; tokens/s comes from the median step."""
    clock = iter([0.0, 7.0, 10.0, 14.0, 20.0, 21.0, 30.0, 32.0])  # warmup 7 s, then 4, 1 and 2 s: median 2
    monkeypatch.setattr(bench, "time", SimpleNamespace(perf_counter=lambda: next(clock)))
    losses = iter([5.0, 4.0, 3.0, 2.0])
    settings = bench.BenchSettings(shape="tiny", steps=3, warmup=1, batch_size=4, seq_len=256, device="cpu",
                                   dtype="float32", quant="none", grad_checkpoint=False, compile=False, seed=0,
                                   checkpoint=None)
    result = bench.timed_steps(lambda: next(losses), settings, tokens_per_step=1000)
    assert (result["step_s_all"], result["step_s"], result["tokens_per_s"]) == ([4.0, 1.0, 2.0], 2.0, 500.0)
    assert result["first_step_s"] == 7.0
    assert (result["loss_first"], result["loss_last"]) == (5.0, 2.0)


def test_gpu_check_is_valid_bash_and_stops_early_without_a_gpu():
    script = ROOT / "scripts" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: run the script itself")
    result = subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=120,
                            env={"PATH": os.environ["PATH"], "PYTHON": sys.executable})
    assert result.returncode != 0
    assert "torch sees no CUDA device" in result.stderr
    assert "benchmark" not in result.stdout  # nothing after the machine check ran


def test_bench_data_finds_the_planted_trouble_and_accounts_for_every_row():
    result = run_script("bench_data.py", "--rows", "4000", "--reference", "none")
    assert result.returncode == 0, result.stderr
    header, ours = result.stdout.splitlines()
    assert header.split()[:2] == ["run", "rows"] and ours.startswith("ours, 4 sources in 4 formats")
    assert ours.split()[-4] == "4,000"
    report = json.loads(next(line for line in result.stderr.splitlines() if line.startswith("{")))
    assert list(report) == ["chat", "alpaca", "sharegpt", "faq"]
    assert sum(counts["read"] for counts in report.values()) == 4000
    for counts in report.values():
        assert counts["read"] == counts["rejected"] + counts["duplicates"] + counts["kept"] > 0
        assert counts["rejected"] > 0 and counts["duplicates_within"] > 0
    assert report["alpaca"]["duplicates_across"] > 0 and report["sharegpt"]["duplicates_across"] > 0
    assert report["faq"]["format"] == "csv" and report["alpaca"]["format"] == "alpaca (jsonl)"


def test_bench_data_without_datasets_says_how_to_install_it():
    result = subprocess.run([sys.executable, "-c", "import sys; sys.modules['datasets'] = None; "
                             "sys.argv = ['bench_data.py', '--rows', '10']; sys.path.insert(0, 'scripts'); "
                             "import runpy; runpy.run_path('scripts/bench_data.py', run_name='__main__')"],
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "--reference datasets needs `pip install datasets`" in result.stderr


@pytest.mark.slow
def test_bench_job_runs_the_whole_job_and_reports_every_stage(tmp_path):
    """bench_job.py on a random tiny-shape checkpoint: the whole default job as its own process,
    the stage table, the ratio to training, and the RSS seen from outside. A random model fails its
    self-test after every other stage has run, which the report says instead of failing."""
    result = run_script("bench_job.py", "--shape", "tiny", "--checkpoint", str(tmp_path / "random"), "--out",
                        str(tmp_path / "out"), "--json", str(tmp_path / "bench.json"), "--device", "cpu", timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text(encoding="utf-8"))
    stages = [row["stage"] for row in report["stages"]]
    assert stages == ["examples", "load", "base answers", "rehearsal", "training", "export", "gguf", "check merged/",
                      "after answers", "self-test"]
    assert report["job"]["ended"].startswith("self-test failed: the exported model answered 你是誰")
    rows = [line for line in result.stdout.splitlines() if line.startswith("| ")]
    assert [row.split(" | ")[0].removeprefix("| ") for row in rows[1:-1]] == stages
    assert rows[2].startswith("| load | 46 tensors | ") and rows[-1].startswith("| **whole job** |")
    ratio = result.stdout.strip().splitlines()[-1]
    training = next(row["peak_rss_gb"] for row in report["stages"] if row["stage"] == "training")
    assert ratio.startswith(f"whole job's peak {report['job']['peak_rss_gb']:.2f} GB = "
                            f"{report['job']['peak_rss_gb'] / training:.2f}x the training stage's")
    assert 0 < report["process_peak_rss_gb"] and "seen from outside" in ratio


@pytest.mark.slow
def test_bench_process_times_both_stacks_as_processes_and_accounts_for_their_phases(tmp_path):
    """bench_process.py on the tiny shape: both stacks train the same rows (the same first loss), each
    phase is reported, and the whole process is at least the sum of its phases."""
    report = tmp_path / "report.json"
    result = run_script("bench_process.py", "--shape", "tiny", "--dtype", "float32", "--steps", "2", "--rows", "8",
                        "--tokens", "40", "--folder", str(tmp_path / "inputs"), "--json", str(report))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "| stack | whole process | start-up | imports | data | load | first step | later steps | peak RSS |" \
        in result.stdout and "speed ours/reference" in result.stdout
    stacks = json.loads(report.read_text())["float32"]["stacks"]
    ours, reference = stacks["ours"], stacks["reference"]
    assert abs(ours["losses"][0] - reference["losses"][0]) < 1e-4
    # ours feeds each row but its last token (make_next_token_pairs); transformers feeds it too and drops its logit
    assert ours["tokens"] == reference["tokens"] - 8 > 8 * 30
    for run in (ours, reference):
        assert list(run["marks"]) == ["imports", "data", "load", "step 1", "step 2"]
        assert run["wall_s"] > run["marks"]["step 2"] > run["marks"]["load"] > 0 and run["peak_rss_bytes"] > 2e8


def test_bench_process_refuses_too_few_rows_in_one_line():
    result = run_script("bench_process.py", "--rows", "4", "--steps", "2", "--batch-size", "4")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "4 rows cannot fill 2 steps of 4" in result.stderr


def test_bench_process_trains_what_bench_py_and_the_trainer_train(bench):
    """Its settings are written out (so the reference process does not import ours); they must stay ours."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        bench_process = importlib.import_module("bench_process")
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    from trainer.qwen3.lora import ALL_PROJECTIONS

    assert bench_process.PROJECTIONS == ALL_PROJECTIONS == bench.LORA.targets
    assert (bench_process.RANK, bench_process.ALPHA) == (bench.LORA.r, bench.LORA.alpha)
    assert (bench_process.LR, bench_process.GRAD_CLIP) == (bench.LR, bench.GRAD_CLIP)
