"""The main job's settings: one field per CLI option, the presets that fill what the user left
empty, and the narrow values each stage of the job takes from them.

    WhoAmISettings (what the user asked) -> resolve_settings (presets, device, dtype, OUT, checks)
      -> lora_settings, loop_settings (what the training stage reads)
"""

from dataclasses import dataclass, replace
from pathlib import Path

from ..errors import TrainerError
from ..paths import weights_dir
from ..qwen3.lora import LoraSettings
from ..text.chat import ChatFormat
from ..training.loss import LOSSES
from ..training.train import LoopSettings
from .evaluate import Probe, parse_probe
from .gguf_export import GGUF_TYPES, require_gguf
from .loading import resolve_device, resolve_dtype
from .tiny import TINY_WORLDS

DEFAULT_MODEL = "Qwen/Qwen3-4B-Instruct-2507"


@dataclass(frozen=True)
class WhoAmISettings:
    """Every knob of the job; the CLI options map one to one onto these fields."""

    loss: str = "ce"  # the loss of a micro-batch, a name in trainer.training.loss.LOSSES: "ce", token_cross_entropy
    model: str = DEFAULT_MODEL  # hub id, local Qwen3 folder, or "tiny"
    data: str | None = None  # TSV or JSONL file; None = the built-in who-am-i set
    method: str = "lora"  # "lora" (frozen base + adapters) or "full" (every weight, as the F# trainer)
    steps: int | None = None  # optimizer steps (None = the model's preset)
    lr: float | None = None  # peak learning rate
    batch_size: int | None = None  # examples per micro-batch
    grad_accum: int | None = None  # micro-batches per optimizer step
    seq_len: int = 96  # positions kept per example (the F# trainer's cap)
    lora_r: int = 16  # LoRA rank
    lora_alpha: float = 32.0  # LoRA alpha (update scaled by alpha / r)
    lora_dropout: float = 0.05  # dropout on the LoRA input
    quant: str = "nf4"  # frozen base weights: "nf4" (4-bit) or "none"
    device: str = "auto"  # "auto", "cpu", "cuda"
    dtype: str = "auto"  # compute dtype: "auto" (bf16 where the hardware multiplies it natively), "float32", "bfloat16"
    grad_clip: float = 0.5  # max gradient norm (the F# trainer's default)
    seed: int = 20260226  # the F# trainer's seed
    out: str | None = None  # output folder (None = weights/whoami-<model>)
    export: bool = True  # write OUT/adapter and OUT/merged
    self_test: bool = True  # check the export, reload the adapter, generate, and evaluate before/after
    check_merged: str = "auto"  # ask merged/ itself 你是誰 at the end: "on", "off", "auto" (where a dense copy fits
    # within the job's peak so far)
    ce_chunk: int | None = None  # answer positions per chunk of logits (None = under 256 MiB)
    grad_checkpoint: bool | None = None  # recompute each layer in backward (None = on for CUDA)
    compile: bool = False  # torch.compile each micro-batch's forward and backward
    pack: bool = False  # pack several examples per row up to seq_len
    save_every: int = 0  # write OUT/checkpoints/step-N every N steps (0 = never)
    keep_checkpoints: int = 2  # how many of the newest checkpoints to keep
    resume: str | None = None  # "latest" or a checkpoint folder
    stop_after: int = 0  # stop this run after N steps with a checkpoint, to --resume later (0 = never)
    max_skips: int = 10  # give up after this many non-finite steps in a row
    trust_our_template: bool = False  # train even if the model's own chat template renders differently
    rehearsal: str | None = None  # "self" (the base's own replies), "fixed" (hand-written fact answers), "none";
    # None = self with the built-in set, none with --data
    reply_tokens: int | None = None  # token budget of every generated reply: rehearsal, validation, evaluation
    val_every: int | None = None  # score the validation split every N steps (0 = never; None = preset, 0 with --data)
    stop_when_learned: bool | None = None  # end once every validation wording is answered exactly as taught, twice in a row
    # (None = on with the built-in set, off with --data)
    preserve_kl: float | None = None  # beta of KL(base || model) on rehearsal answers (0 = off; None = preset,
    # 0 without rehearsal or with --method full)
    strict: bool = False  # --data: stop at the first bad row instead of setting bad rows aside
    gguf: str | None = None  # also write OUT/gguf/<OUT name>-<type>.gguf from OUT/merged (f32, f16, bf16, q8_0)
    probe: tuple[str, ...] = ()  # "PROMPT=EXPECTED" checks of the self-test: the reply to PROMPT must contain EXPECTED
    thinking: str | None = None  # a hybrid model asked with thinking "on" or "off" (None = off); others: None
    reasoning_tokens: int | None = None  # budget added to --reply-tokens where the model thinks (None = preset)


# Presets for what the user left at None: the tiny world learns fast, the real model follows the SFT guide.
PRESETS = {
    "tiny": {"steps": 300, "lr": 1e-3, "batch_size": 16, "grad_accum": 1, "reply_tokens": 32, "val_every": 10,
             "preserve_kl": 16.0, "reasoning_tokens": 32},
    "real": {"steps": 150, "lr": 2e-4, "batch_size": 8, "grad_accum": 2, "reply_tokens": 128, "val_every": 10,
             "preserve_kl": 1.0, "reasoning_tokens": 1024},
}
# preserve_kl: the tiny world is so sure of its answers (p > 0.9) that its KL to the base stays tiny
# until a reply flips, so it needs a large beta (on four world builds, seeds 0-2, 16 kept at least 96.8% of
# the held-out facts, where 0 kept as few as 83.9% and 4 as few as 90.3%); the real model's replies are long and far less peaked, where beta 1 weighs a preserved
# token like a trained one. Not yet measured on the real model.
CHOICES = {"loss": tuple(LOSSES), "method": ("lora", "full"), "quant": ("nf4", "none"),
           "device": ("auto", "cpu", "cuda"), "dtype": ("auto", "float32", "bfloat16"),
           "rehearsal": ("self", "fixed", "none"), "check_merged": ("auto", "on", "off"), "thinking": ("on", "off")}


def resolve_settings(settings: WhoAmISettings) -> WhoAmISettings:
    """Fill presets, device, dtype and the output folder; reject unknown choices."""
    for field, allowed in CHOICES.items():
        if getattr(settings, field) not in (*allowed, *((None,) if field in ("rehearsal", "thinking") else ())):
            raise TrainerError(f"--{field.replace('_', '-')} {getattr(settings, field)!r}: choose from {', '.join(allowed)}")
    preset = PRESETS["tiny" if settings.model in TINY_WORLDS else "real"]
    filled = {k: v for k, v in preset.items() if getattr(settings, k) is None}
    device = resolve_device(settings.device)
    dtype = resolve_dtype(settings.dtype, device)[0]
    out = settings.out or str(weights_dir() / f"whoami-{Path(settings.model).name}")
    if settings.gguf is not None:
        if settings.gguf not in GGUF_TYPES:
            raise TrainerError(f"--gguf {settings.gguf!r}: choose from {', '.join(GGUF_TYPES)}")
        if not settings.export:
            raise TrainerError("--gguf converts OUT/merged, and --no-export writes none: drop one of them")
        require_gguf()
    if settings.method == "full" and settings.quant != "none":
        raise TrainerError("--method full trains every weight, so it needs dense weights: add --quant none")
    if settings.preserve_kl is not None and settings.preserve_kl < 0:
        raise TrainerError(f"--preserve-kl {settings.preserve_kl}: must be 0 (off) or more")
    if settings.preserve_kl and settings.method != "lora":
        raise TrainerError("--preserve-kl compares with the base through the frozen weights, adapter off: "
                           "it needs --method lora")
    probes(settings)  # a malformed --probe stops the run before the model is loaded
    checkpointing = settings.grad_checkpoint if settings.grad_checkpoint is not None else device == "cuda"
    built_in = settings.data is None
    rehearsal = settings.rehearsal or ("self" if built_in else "none")
    stop = settings.stop_when_learned if settings.stop_when_learned is not None else built_in
    if settings.preserve_kl and rehearsal == "none":
        raise TrainerError("--preserve-kl keeps the base's distribution on rehearsal rows, and --rehearsal is none: "
                           "add --rehearsal self or fixed")
    if settings.preserve_kl is None and (rehearsal == "none" or settings.method != "lora"):
        filled["preserve_kl"] = 0.0
    if not built_in and settings.val_every is None:
        filled["val_every"] = 0  # the validation split is who-am-i wordings: with --data, only when asked
    return replace(settings, **filled, device=device, dtype=dtype, out=out, grad_checkpoint=checkpointing,
                   rehearsal=rehearsal, stop_when_learned=stop)


def probes(settings: WhoAmISettings) -> tuple[Probe, ...]:
    return tuple(parse_probe(text) for text in settings.probe)


def reply_budget(settings: WhoAmISettings, chat: ChatFormat) -> int:
    """Tokens of every generated reply: --reply-tokens, plus --reasoning-tokens where the model thinks
    first (one budget for both: a reply cut inside its reasoning has no answer yet)."""
    return settings.reply_tokens + (settings.reasoning_tokens if chat.thinks else 0)


def lora_settings(settings: WhoAmISettings) -> LoraSettings | None:
    """The adapter's rank, alpha and dropout; None for --method full, which trains every weight instead."""
    return LoraSettings(settings.lora_r, settings.lora_alpha, settings.lora_dropout) if settings.method == "lora" else None


def loop_settings(settings: WhoAmISettings, pad_id: int) -> LoopSettings:
    """The training loop's values from resolved settings (presets filled)."""
    return LoopSettings(steps=settings.steps, batch_size=settings.batch_size, grad_accum=settings.grad_accum,
                        lr=settings.lr, warmup_steps=max(1, round(0.05 * settings.steps)), grad_clip=settings.grad_clip,
                        weight_decay=0.01 if settings.method == "lora" else 0.0, seed=settings.seed, pad_id=pad_id,
                        device=settings.device, save_every=settings.save_every, max_skips=settings.max_skips,
                        stop_after=settings.stop_after, stop_when_learned=bool(settings.stop_when_learned))
