"""OUT/loss.png: loss and learning rate against step, drawn from OUT/metrics.jsonl.

matplotlib is optional (`pip install -e ".[plot]"`): without it the job prints a one-line
notice and goes on; the numbers are in metrics.jsonl either way.
"""

import json
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
    figure, loss_axis = plt.subplots(figsize=(7, 4), dpi=100)
    loss_axis.plot(steps, [r["loss"] for r in records], color="tab:blue", label="loss (answer tokens)")
    loss_axis.set_xlabel("step")
    loss_axis.set_ylabel("cross-entropy loss", color="tab:blue")
    lr_axis = loss_axis.twinx()
    lr_axis.plot(steps, [r["lr"] for r in records], color="tab:orange", linestyle="--", label="learning rate")
    lr_axis.set_ylabel("learning rate", color="tab:orange")
    loss_axis.set_title("who-am-i training")
    figure.tight_layout()
    temp = png_path.with_name(f".{png_path.name}.tmp.png")
    figure.savefig(temp)
    plt.close(figure)
    temp.replace(png_path)
    return f"wrote {png_path}"
