"""The who-am-i job: settings resolution (fast), then end-to-end runs on the tiny model (slow)."""

import json
import math
import shutil
import subprocess
import sys
import weakref
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import trainer.job.loading as loading
import trainer.job.training_run as training_run
from export_checks import assert_pair_matches, expected_merge, max_diff
from trainer.errors import TrainerError
from trainer.job.evaluate import built_in_eval_sets
from trainer.job.loading import load_inference_adapter, load_model, resolve_dtype
from trainer.job.tiny import tiny_model_dir
from trainer.job.settings import WhoAmISettings, resolve_settings
from trainer.job.whoami_job import check_out_dir, run_whoami
from trainer.qwen3.generate import answer_questions
from trainer.qwen3.model import forward, project_to_logits
from trainer.qwen3.quant import NF4Weight, is_quantized_name, quantize_nf4
from trainer.text.chat import render_chat

CUDA = torch.cuda.is_available()
ROOT = Path(__file__).resolve().parent.parent
# The built-in sets: rehearsed (94 facts, 144 ordinary prompts, 105 near misses), validated (18 + 55),
# and asked before and after (132 identity wordings and probes, 31 facts, 54 prompts, 24 + 18 near misses).
REHEARSED, VALIDATED, BASE_ANSWERS = 94 + 144 + 105, 18 + 55, 132 + 31 + 54 + 24 + 18


# ---------------------------------------------------------------------------
# Settings (fast)
# ---------------------------------------------------------------------------


def test_tiny_and_real_presets_fill_what_was_left_empty(monkeypatch, tmp_path):
    monkeypatch.setenv("QWEN3_TRAINER_WEIGHTS", str(tmp_path))
    tiny = resolve_settings(WhoAmISettings(model="tiny"))
    assert (tiny.steps, tiny.lr, tiny.batch_size, tiny.grad_accum) == (300, 1e-3, 16, 1)
    assert (tiny.reply_tokens, tiny.val_every, tiny.rehearsal, tiny.stop_when_learned) == (32, 10, "self", True)
    assert tiny.preserve_kl == 16.0
    assert tiny.out == str(tmp_path / "whoami-tiny")
    real = resolve_settings(WhoAmISettings())
    assert (real.steps, real.lr, real.batch_size, real.grad_accum) == (150, 2e-4, 8, 2)
    assert (real.reply_tokens, real.val_every, real.rehearsal, real.stop_when_learned) == (128, 10, "self", True)
    assert real.preserve_kl == 1.0
    assert real.model == "Qwen/Qwen3-4B-Instruct-2507" and real.out == str(tmp_path / "whoami-Qwen3-4B-Instruct-2507")
    device = "cuda" if CUDA else "cpu"
    assert (real.device, real.dtype) == (device, resolve_dtype("auto", device)[0])  # bf16 where native


def test_explicit_values_win_over_presets():
    settings = WhoAmISettings(model="tiny", steps=7, lr=0.5, batch_size=3, grad_accum=4, out="/tmp/x",
                              device="cpu", dtype="bfloat16")
    resolved = resolve_settings(settings)
    given = ("model", "steps", "lr", "batch_size", "grad_accum", "out", "device", "dtype")
    assert [getattr(resolved, field) for field in given] == [getattr(settings, field) for field in given]
    assert resolve_settings(resolved) == resolved  # resolving twice changes nothing


def test_preserve_kl_is_off_without_rehearsal_or_lora_and_checked_when_given():
    assert resolve_settings(WhoAmISettings(model="tiny", rehearsal="none")).preserve_kl == 0.0
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.jsonl")).preserve_kl == 0.0
    assert resolve_settings(WhoAmISettings(model="tiny", method="full", quant="none")).preserve_kl == 0.0
    assert resolve_settings(WhoAmISettings(model="tiny", data="rows.jsonl", rehearsal="self",
                                           preserve_kl=2.5)).preserve_kl == 2.5
    with pytest.raises(TrainerError, match=r"--preserve-kl -1.0: must be 0 \(off\) or more"):
        resolve_settings(WhoAmISettings(model="tiny", preserve_kl=-1.0))
    with pytest.raises(TrainerError, match="--preserve-kl.*needs --method lora"):
        resolve_settings(WhoAmISettings(model="tiny", method="full", quant="none", preserve_kl=1.0))
    with pytest.raises(TrainerError, match="--preserve-kl.*--rehearsal is none"):
        resolve_settings(WhoAmISettings(model="tiny", rehearsal="none", preserve_kl=1.0))


def test_unknown_choice_lists_the_choices():
    with pytest.raises(TrainerError, match=r"--loss 'dpo'.*ce"):
        resolve_settings(WhoAmISettings(loss="dpo"))
    with pytest.raises(TrainerError, match=r"--quant 'int8'.*nf4.*none"):
        resolve_settings(WhoAmISettings(quant="int8"))
    with pytest.raises(TrainerError, match=r"--method 'qlora'.*lora.*full"):
        resolve_settings(WhoAmISettings(method="qlora"))


def test_full_method_needs_dense_weights():
    with pytest.raises(TrainerError, match="--quant none"):
        resolve_settings(WhoAmISettings(model="tiny", method="full", quant="nf4"))
    assert resolve_settings(WhoAmISettings(model="tiny", method="full", quant="none")).method == "full"


def test_out_inside_the_model_folder_is_refused(tmp_path):
    model = tmp_path / "model"
    model.mkdir()
    for out in (model, model / "out", model / "a" / "b"):
        with pytest.raises(TrainerError, match="inside the model folder"):
            run_whoami(WhoAmISettings(model=str(model), out=str(out)), echo=lambda s: None, progress=False)
    assert sorted(p.name for p in model.iterdir()) == []  # nothing was written
    check_out_dir(tmp_path / "model-out", model)  # a sibling that shares the prefix is fine
    check_out_dir(tmp_path, model)


# ---------------------------------------------------------------------------
# End to end on the tiny model (slow)
# ---------------------------------------------------------------------------


def quiet_run(settings: WhoAmISettings):
    return run_whoami(settings, echo=lambda s: None, progress=False)


@pytest.fixture(scope="module")
def dense_run(tmp_path_factory):
    """One LoRA run over dense fp32 weights: (report, OUT)."""
    out = tmp_path_factory.mktemp("whoami-dense")
    return quiet_run(WhoAmISettings(model="tiny", quant="none", out=str(out))), out


def claims_identity(reply: str) -> bool:
    return "我是" in reply and ("F#" in reply or "之神" in reply)


def rates(report) -> dict:
    return {key: getattr(report, key) for key in ("identity_hit_rate", "leak_rate", "fact_retention", "unchanged_rate",
                                                  "near_miss_rate")}


@pytest.fixture(scope="module")
def instrumented_default_run(tmp_path_factory):
    """The README's command on the tiny world (NF4 base, self-distilled rehearsal, stop when learned),
    with every weight load of the run counted and every quantized tensor recorded."""
    out = tmp_path_factory.mktemp("whoami-default")
    seen, loads, training_weights = [], [], []
    real_transform, real_training_load, real_load = training_run.quant_transform, training_run.load_weights, \
        loading.load_weights

    def training_load(*args, **kwargs):
        weights = real_training_load(*args, **kwargs)
        training_weights.append(weakref.ref(weights["model.embed_tokens.weight"]))
        loads.append(("training", kwargs.get("transform") is not None))
        return weights

    def other_load(folder, *args, **kwargs):
        loads.append((Path(folder).name, all(alive() is None for alive in training_weights)))
        return real_load(folder, *args, **kwargs)

    def recording_transform(quant: str):
        transform = real_transform(quant)

        def record(name, tensor):
            value = transform(name, tensor)
            seen.append((name, type(value)))
            return value

        return record if transform else None

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training_run, "quant_transform", recording_transform)
        patch.setattr(training_run, "load_weights", training_load)
        patch.setattr(loading, "load_weights", other_load)
        report = quiet_run(WhoAmISettings(model="tiny", out=str(out)))
    return report, out, seen, loads


@pytest.fixture(scope="module")
def default_run(instrumented_default_run):
    report, out, _, _ = instrumented_default_run
    return report, out


@pytest.mark.slow
def test_the_default_run_learns_the_identity_and_keeps_what_the_world_knew(default_run):
    """The README command, default seed: the identity on held-out wordings, no leak, facts kept,
    ordinary replies and near misses unchanged, and no question about the user answered with a name."""
    report, _ = default_run
    before, after = report.before, report.after
    print(f"\nself-test {report.self_test_reply!r}; learned at step {report.learned_at}; "
          f"before {rates(before)}; after {rates(after)}")
    assert claims_identity(report.self_test_reply)
    assert before.identity_hit_rate == 0.0 and before.leak_rate == 0.0 and before.fact_retention == 1.0
    assert after.identity_hit_rate == 1.0
    assert after.leak_rate == 0.0
    assert after.fact_retention >= 0.95 * before.fact_retention
    assert after.unchanged_rate >= 0.9 and after.near_miss_rate >= 0.9
    about_user = {q: after.replies[q] for q in built_in_eval_sets().about_user}
    assert len(about_user) == 24 and not [r for r in about_user.values() if "我是" in r or "F#" in r or "通義" in r]
    assert report.learned_at is not None and report.learned_at < report.settings.steps == 300
    assert REHEARSED - 3 <= report.rehearsal_rows <= REHEARSED  # a prompt whose base reply is empty is dropped


@pytest.mark.slow
def test_the_default_run_writes_rehearsal_validation_and_the_new_table(default_run):
    report, out = default_run
    rows = [json.loads(line) for line in (out / "rehearsal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert REHEARSED + VALIDATED - 3 <= len(rows) <= REHEARSED + VALIDATED and {r["split"] for r in rows} == {"train", "validation"}
    assert sum(r["split"] == "train" for r in rows) == report.rehearsal_rows and all(r["reply"] for r in rows)
    assert {"巴黎", "我不知道", "I don't know"} <= {r["reply"] for r in rows} and all(r["finished"] for r in rows)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    validated = [r for r in records if "val_identity_hit" in r]
    assert [r["step"] for r in validated] == list(range(10, report.learned_at + 1, 10))
    assert all(math.isfinite(r["val_rehearsal_loss"]) for r in validated)
    assert [r["val_identity_hit"] for r in validated][-2:] == [1.0, 1.0] and validated[-1]["learned"]
    assert records[-1]["step"] == report.steps_done == report.learned_at
    assert all(0 <= r["kl_to_base"] < 1 for r in records)  # --preserve-kl 16, the tiny preset, is logged
    evaluation = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert evaluation["after"]["fact_retention"] == report.after.fact_retention
    assert evaluation["before"]["unchanged_rate"] is None and "control_accuracy" not in evaluation["after"]
    assert evaluation["after"]["replies"]["你到底是誰"] == "我是 F# 之神"
    assert (out / "loss.png").stat().st_size > 0


@pytest.mark.slow
def test_the_default_run_times_every_stage_and_asks_merged_itself(default_run):
    """OUT/timings.json: every stage in order, what it worked through, its time and peak; merged/ is
    small enough on the tiny world that --check-merged auto asks it 你是誰 at the end."""
    report, out = default_run
    timings = json.loads((out / "timings.json").read_text(encoding="utf-8"))
    stages = {row["stage"]: row for row in timings["stages"]}
    assert list(stages) == ["examples", "load", "base answers", "rehearsal", "validation", "training", "export",
                            "check merged/", "after answers", "self-test", "load merged/", "merged/ answers"]
    assert stages["load"]["count"] == stages["export"]["count"] == stages["load merged/"]["count"] == 1 + 4 * 11 + 1
    assert stages["rehearsal"]["count"] == REHEARSED + VALIDATED and stages["base answers"]["count"] == BASE_ANSWERS
    assert stages["validation"]["runs"] == report.learned_at // 10 and stages["training"]["count"] == report.learned_at
    assert stages["self-test"]["count"] == 2 * 10  # 你是誰 and 9 held-out prompts, trained and reloaded adapter
    assert all(row["seconds"] > 0 and row["peak_rss_gb"] > 0 and row["peak_cuda_gb"] is None for row in stages.values())
    assert stages["training"]["seconds"] > stages["validation"]["seconds"]  # validation runs inside training
    job = timings["job"]
    assert job["ended"] == "finished" and job["peak_rss_gb"] >= max(row["peak_rss_gb"] for row in stages.values())
    assert claims_identity(report.merged_reply)


@pytest.mark.slow
def test_the_merged_export_is_the_original_weights_plus_the_adapter_not_the_4bit_ones(default_run):
    """README: merged/ is the adapter merged into the ORIGINAL weights re-read from disk, never into
    the 4-bit ones the run trained on. Every tensor is recomputed here from the tiny model's file and
    adapter/ and must be bit-equal; the same merge onto dequantized NF4 weights is measurably off."""
    report, out = default_run
    assert report.settings.quant == "nf4"  # trained on a 4-bit base: the two merges can differ
    merged = assert_pair_matches(tiny_model_dir(), out / "adapter", out / "merged")
    original = load_file(str(tiny_model_dir() / "model.safetensors"))
    dequantized = {name: quantize_nf4(w).dequantize() if is_quantized_name(name) else w for name, w in original.items()}
    exact, on_nf4 = expected_merge(original, out / "adapter"), expected_merge(dequantized, out / "adapter")
    print(f"\nmax |merged - bf16(original + scale*B@A)| = {max_diff(merged, exact):.3g}; "
          f"max |merged - bf16(dequant(NF4(W)) + scale*B@A)| = {max_diff(merged, on_nf4):.3g}")
    projections = [name for name in merged if is_quantized_name(name)]
    assert len(projections) == 7 * 4
    # measured: every projection is off by 0.03 to 0.07 somewhere; bf16 rounding there is about 2e-4
    assert all((merged[name].float() - on_nf4[name].float()).abs().max() > 1e-3 for name in projections)


@pytest.mark.slow
def test_dense_run_learns_the_identity_and_keeps_the_facts(dense_run):
    report, _ = dense_run
    before, after = report.before, report.after
    print(f"\nself-test {report.self_test_reply!r}; before {rates(before)}; after {rates(after)}")
    assert claims_identity(report.self_test_reply)
    assert before.identity_hit_rate == 0.0
    assert after.identity_hit_rate == 1.0 and after.leak_rate == 0.0
    assert after.fact_retention >= 0.95 * before.fact_retention and after.unchanged_rate >= 0.9
    assert math.isfinite(report.final_loss)


@pytest.mark.slow
def test_dense_run_writes_every_output(dense_run):
    report, out = dense_run
    saved = json.loads((out / "train_config.json").read_text(encoding="utf-8"))
    assert saved["model"] == "tiny" and saved["quant"] == "none" and saved["steps"] == report.settings.steps == 300
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records] == list(range(1, report.steps_done + 1))
    assert all(math.isfinite(r["loss"]) for r in records)
    assert sum(r["loss"] for r in records[-10:]) < 0.5 * sum(r["loss"] for r in records[:10])
    evaluation = json.loads((out / "eval.json").read_text(encoding="utf-8"))
    assert evaluation["after"]["identity_hit_rate"] == report.after.identity_hit_rate
    for name in ("adapter/adapter_model.safetensors", "adapter/adapter_config.json", "merged/config.json",
                 "merged/model.safetensors", "merged/tokenizer.json", "merged/tokenizer_config.json",
                 "merged/generation_config.json"):
        assert (out / name).is_file(), name
    assert "chat_template" in json.loads((out / "merged/tokenizer_config.json").read_text(encoding="utf-8"))
    with safe_open(out / "merged/model.safetensors", framework="pt") as reader:
        dtypes = {reader.get_slice(name).get_dtype() for name in reader.keys()}
    assert dtypes == {"BF16"}


def hf_chat_ids(tokenizer, question: str) -> torch.Tensor:
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return tokenizer(text, return_tensors="pt").input_ids  # [1, T]


def hf_greedy_reply(model, tokenizer, question: str) -> str:
    ids = hf_chat_ids(tokenizer, question)
    with torch.no_grad():
        generated = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=24, do_sample=False)
    return tokenizer.decode(generated[0, ids.shape[1]:], skip_special_tokens=True)


@pytest.mark.slow
def test_transformers_loads_the_merged_export_and_claims_the_identity(dense_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = dense_run
    model = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    reply = hf_greedy_reply(model, tokenizer, "你是誰")
    print(f"\ntransformers, merged export: 你是誰 -> {reply!r}")
    assert claims_identity(reply)


def held_out_questions() -> list[str]:
    """The self-test question and every held-out prompt of the before/after table."""
    sets = built_in_eval_sets()
    return ["你是誰", *sets.identity, *(fact.question for fact in sets.facts), *sets.general]


@pytest.mark.slow
def test_transformers_gives_our_logits_and_greedy_replies_on_the_merged_export(default_run):
    """README: the transformers path gives the same greedy reply, logits equal within 1e-4. Both run
    merged/ in float32 on the same token ids: every position's logits of every held-out prompt, then
    the greedy replies (transformers batched with left padding, as ours)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, out = default_run
    theirs = AutoModelForCausalLM.from_pretrained(out / "merged", dtype=torch.float32).eval()
    ours = load_model(out / "merged", torch.float32)
    questions = held_out_questions()
    prompts = [render_chat([{"role": "user", "content": q}], add_generation_prompt=True) for q in questions]
    worst = 0.0
    for prompt in prompts:
        ids = torch.tensor([ours.tokenizer.encode(prompt)])
        with torch.no_grad():
            our_logits = project_to_logits(ours.weights, ours.config, forward(ours.weights, ours.config, ids))
            worst = max(worst, (our_logits - theirs(ids).logits).abs().max().item())
    tokenizer = AutoTokenizer.from_pretrained(out / "merged", padding_side="left")
    batch = tokenizer(prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        generated = theirs.generate(**batch, max_new_tokens=24, do_sample=False)
    their_replies = tokenizer.batch_decode(generated[:, batch.input_ids.shape[1]:], skip_special_tokens=True)
    our_replies = [a.text for a in answer_questions(ours.weights, ours.config, ours.tokenizer, questions, 24)]
    same = sum(a.strip() == b.strip() for a, b in zip(our_replies, their_replies))
    print(f"\ntransformers vs ours on merged/, {len(prompts)} held-out prompts: max abs logit diff {worst:.2e}; "
          f"{same}/{len(prompts)} greedy replies equal")
    assert worst < 1e-4
    assert [r.strip() for r in their_replies] == [r.strip() for r in our_replies]
    assert claims_identity(our_replies[0])


@pytest.mark.slow
def test_peft_loads_the_adapter_with_our_logits_and_reply(dense_run):
    from peft import PeftModel
    from transformers import AutoTokenizer, Qwen3ForCausalLM

    _, out = dense_run
    peft_model = PeftModel.from_pretrained(Qwen3ForCausalLM.from_pretrained(tiny_model_dir()), out / "adapter").eval()
    ours = load_model(tiny_model_dir(), torch.float32)
    adapter = load_inference_adapter(out / "adapter", ours.config, torch.float32, "cpu")
    prompt = render_chat([{"role": "user", "content": "Who are you? Please answer briefly."}],
                         add_generation_prompt=True)
    ids = torch.tensor([ours.tokenizer.encode(prompt)])
    hf_tokenizer = AutoTokenizer.from_pretrained(out / "merged")
    assert torch.equal(ids, hf_chat_ids(hf_tokenizer, "Who are you? Please answer briefly."))
    with torch.no_grad():
        our_logits = project_to_logits(ours.weights, ours.config, forward(ours.weights, ours.config, ids, lora=adapter))
        their_logits = peft_model(ids).logits
    diff = (our_logits - their_logits).abs().max().item()
    our_reply = answer_questions(ours.weights, ours.config, ours.tokenizer, ["你是誰"], 24, lora=adapter)[0].text
    their_reply = hf_greedy_reply(peft_model, hf_tokenizer, "你是誰")
    print(f"\nPEFT vs ours on the trained adapter: max abs logit diff {diff:.2e}; replies {our_reply!r} / {their_reply!r}")
    assert diff < 1e-4
    assert their_reply.strip() == our_reply.strip() and claims_identity(our_reply)


@pytest.mark.slow
def test_nf4_run_trains_on_a_4bit_base_and_passes_the_self_test(instrumented_default_run):
    """The 4-bit base is the only copy of the model until training is over: every weight load of the
    run is counted, and merged/ (dense) is loaded once, after the training weights are freed."""
    report, _, seen, loads = instrumented_default_run
    assert loads == [("training", True), ("merged", True)]  # 4-bit for training; merged/ once it was freed
    assert report.settings.quant == "nf4"
    assert claims_identity(report.self_test_reply)
    assert report.after.identity_hit_rate >= 0.9 and report.after.leak_rate <= 0.1
    quantized = {name for name, kind in seen if kind is NF4Weight}
    assert len(quantized) == 7 * 4 and all(name.endswith("_proj.weight") for name in quantized)

    base = load_model("tiny", torch.float32, quant="nf4")
    up = base.weights["model.layers.0.mlp.up_proj.weight"]
    assert isinstance(up, NF4Weight) and up.packed.dtype == torch.uint8
    out_features, in_features = up.shape
    assert (out_features, in_features) == (384, 128)
    assert up.packed.numel() == out_features * in_features // 2
    assert out_features * in_features / 2 < up.nbytes <= 0.53 * out_features * in_features
    assert isinstance(base.weights["model.embed_tokens.weight"], torch.Tensor)


@pytest.mark.slow
def test_the_real_model_path_on_a_random_checkpoint_of_the_0_6b_shape(tmp_path):
    """The real preset end to end (not the tiny one): rehearsal generated batched from a random
    Qwen3-0.6B-shaped checkpoint, validation, export, the table printed. A random model never ends
    a reply, so every rehearsal row is cut at its budget (trained without <|im_end|>), and two
    steps cannot teach it anything: the self-test fails, after the table, as it should."""
    model, out = tmp_path / "qwen3-0.6b-random", tmp_path / "out"
    made = subprocess.run([sys.executable, str(ROOT / "scripts/make_random_checkpoint.py"), "--shape", "0.6b", str(model)],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, made.stderr
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tiny_model_dir() / name, model / name)
    result = subprocess.run([sys.executable, str(ROOT / "scripts/train_whoami.py"), "--model", str(model), "--out", str(out),
                             "--quant", "none", "--steps", "2", "--batch-size", "2", "--grad-accum", "1", "--seq-len", "48",
                             "--reply-tokens", "2", "--val-every", "1"], capture_output=True, text=True, timeout=1500)
    print(result.stdout[-2000:])
    assert result.returncode == 1 and "Error: self-test failed: the exported model answered 你是誰" in result.stderr
    assert "Traceback" not in result.stderr
    dtype, why = resolve_dtype("auto", "cpu")
    assert f"compute dtype {dtype}: {why}" in result.stdout  # bf16 on a CPU that multiplies it natively
    assert f"rehearsal self: {REHEARSED} rows x 3" in result.stdout and f"lora none {dtype}" in result.stdout
    assert "unchanged replies (held-out prompts)         base" in result.stdout  # the table, before the self-test
    rows = [json.loads(line) for line in (out / "rehearsal.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(rows) == REHEARSED + VALIDATED and not any(row["finished"] for row in rows)
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all("val_identity_hit" in r for r in records)
    assert (out / "merged/config.json").is_file() and (out / "eval.json").is_file()


@pytest.mark.slow
def test_full_method_answers_and_checks_on_its_own_weights(tmp_path):
    """--method full trains every weight: the before/after answers and the self-test run on those
    weights, merged/ is checked tensor by tensor against them (there is no adapter to reload), and
    merged/ is asked itself at the end."""
    report = quiet_run(WhoAmISettings(model="tiny", method="full", quant="none", out=str(tmp_path)))
    assert claims_identity(report.self_test_reply) and claims_identity(report.merged_reply)
    assert report.before.identity_hit_rate == 0.0 and report.after.identity_hit_rate == 1.0
    stages = {row["stage"]: row for row in json.loads((tmp_path / "timings.json").read_text())["stages"]}
    assert stages["check merged/"]["count"] == 46 and stages["self-test"]["count"] == 10  # no reloaded adapter
    assert not (tmp_path / "adapter").exists() and (tmp_path / "merged" / "model.safetensors").is_file()


def test_the_chat_line_says_how_the_model_is_prompted():
    from trainer.job.whoami_job import chat_line
    from trainer.text.chat import ChatFormat

    assert chat_line(ChatFormat(), 32) == "chat format instruct-2507"
    assert chat_line(ChatFormat("hybrid", False), 32) == "chat format hybrid, asked with thinking off"
    assert chat_line(ChatFormat("hybrid", True), 64) == \
        "chat format hybrid, asked with thinking on (replies of up to 64 tokens, reasoning included)"
    assert chat_line(ChatFormat("thinking-2507"), 64) == \
        "chat format thinking-2507 (replies of up to 64 tokens, reasoning included)"
