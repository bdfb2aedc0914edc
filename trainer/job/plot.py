"""OUT/loss.png: loss, learning rate and validation scores against step, drawn from OUT/metrics.jsonl.

matplotlib is optional (`pip install -e ".[plot]"`): without it the job prints a one-line
notice and goes on; the numbers are in metrics.jsonl either way.
"""

import json
import math
from pathlib import Path


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def plot_loss(metrics_path: Path, png_path: Path) -> str:
    """Draw the curve; returns a one-line message saying what happened."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no screen needed
        import matplotlib.pyplot as plt
    except ImportError:
        return f"no {png_path.name}: matplotlib is not installed (pip install matplotlib); the numbers are in {metrics_path}"
    records = read_metrics(metrics_path)
    steps = [r["step"] for r in records]
    validated = [r for r in records if "val_identity_hit" in r]
    figure, (loss_axis, hit_axis) = plt.subplots(2, 1, figsize=(7, 6), dpi=100, sharex=True,
                                                 gridspec_kw={"height_ratios": (2, 1)})
    loss_axis.plot(steps, [r["loss"] for r in records], color="tab:blue", label="training loss (answer tokens)")
    held_out = [r for r in validated if "val_rehearsal_loss" in r]
    if held_out:
        loss_axis.plot([r["step"] for r in held_out], [r["val_rehearsal_loss"] for r in held_out], "o-",
                       color="tab:green", label="held-out rehearsal loss")
    scored = [r for r in records if "val_perplexity" in r]  # a prepared folder's val.jsonl
    if scored:
        loss_axis.plot([r["step"] for r in scored], [math.log(r["val_perplexity"]) for r in scored], "o-",
                       color="tab:red", label="val.jsonl answer loss")
    loss_axis.set_ylabel("cross-entropy loss")
    loss_axis.legend(loc="upper right")
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [r["lr"] for r in records], color="tab:orange", linestyle="--", label="learning rate")
    lr_axis.set_ylabel("learning rate", color="tab:orange")
    loss_axis.set_title("who-am-i training")
    if validated or not scored:
        hit_axis.plot([r["step"] for r in validated], [100 * r["val_identity_hit"] for r in validated], "o-",
                      color="tab:purple", label="validation identity hit")
    for key, color, label in (("val_usability", "tab:red", "val.jsonl usable replies"),
                              ("val_json_valid", "tab:brown", "val.jsonl JSON replies that parse")):
        points = [r for r in records if key in r]
        if points:
            hit_axis.plot([r["step"] for r in points], [100 * r[key] for r in points], "s-", color=color, label=label)
    hit_axis.set_ylim(-5, 105)
    hit_axis.set_ylabel("validation %")
    if scored:
        hit_axis.legend(loc="lower right")
    hit_axis.set_xlabel("step")
    figure.tight_layout()
    temp = png_path.with_name(f".{png_path.name}.tmp.png")
    figure.savefig(temp)
    plt.close(figure)
    temp.replace(png_path)
    return f"wrote {png_path}"
