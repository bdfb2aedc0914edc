"""A disk that fills up during the export: a real file-size limit on a real job, so the 630 KB
adapter fits and the 40 MB merged model does not. One line names the folder and the space it
needed; the previous adapter/merged pair stays whole, loadable and still one pair (merged/ is
exactly the original weights plus that adapter); no temporary folder is left.
(A checkpoint save that runs out of space: test_checkpoint.py; a GGUF file: test_gguf.py.)"""

import hashlib
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from export_checks import assert_pair_matches
from trainer.job.loading import load_model
from trainer.job.tiny import tiny_model_dir
from trainer.qwen3.lora import load_adapter

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 2 * 10**6  # bytes per file: the adapter (630 KB) fits, the merged model (40 MB) does not


def job(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "scripts/train_whoami.py", "--model", "tiny", "--steps", "4", "--rehearsal", "none",
            "--val-every", "0", "--no-stop-when-learned", "--no-self-test", "--out", str(out), *extra]


def limited_files() -> None:
    """In the child: files may not grow past LIMIT; a write beyond it fails with EFBIG (not SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (LIMIT, LIMIT))


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.mark.slow
def test_an_export_that_runs_out_of_space_keeps_the_previous_pair_and_no_temporary_folder(tmp_path):
    out = tmp_path / "out"
    first = subprocess.run(job(out), cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr
    before = {name: digests(out / name) for name in ("adapter", "merged")}

    second = subprocess.run(job(out, "--seed", "7"), cwd=ROOT, capture_output=True, text=True, timeout=600,
                            preexec_fn=limited_files)
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr
    line = second.stderr.strip().splitlines()[-1]
    assert line.startswith(f"Error: no space to write {out}: it needs about 41.1 MB, ") and "(File too large)" in line
    assert line.endswith(f"the previous export is kept as it was ({out / 'adapter'} and {out / 'merged'})")
    assert_pair_matches(tiny_model_dir(), out / "adapter", out / "merged")  # never a new adapter beside an old merge
    assert {name: digests(out / name) for name in ("adapter", "merged")} == before  # the old pair, untouched
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    load_adapter(out / "adapter")
    load_model(out / "merged")
