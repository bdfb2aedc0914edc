"""The Hub download with the real huggingface_hub client against a local stand-in (tests/hub_stand_in.py).

Each run is a separate process with HF_ENDPOINT pointing at 127.0.0.1 (the client reads it at
import), so nothing in huggingface_hub is patched: what a user's run does with a flaky, gated or
missing repository, and without network, is what these tests see.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hub_stand_in import HubBehaviour, HubStandIn
from trainer.job.loading import resolve_model

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
HUB_ID = "owner/tiny-world"
SHARD = "model.safetensors"
QUICK_RUN = ["--steps", "2", "--batch-size", "2", "--rehearsal", "none", "--val-every", "0", "--no-stop-when-learned",
             "--no-self-test", "--no-export", "--dtype", "float32"]


@pytest.fixture(scope="module")
def repository(tmp_path_factory) -> Path:
    """The tiny world as a Hub repository, plus a pickle (.bin) and a README that must not be fetched."""
    folder = tmp_path_factory.mktemp("repository")
    world = resolve_model("tiny")
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json", SHARD):
        shutil.copyfile(world / name, folder / name)
    (folder / "pytorch_model.bin").write_bytes(b"\x80\x04 a pickle: never to be fetched")
    (folder / "README.md").write_text("# tiny world\n")
    return folder


def run_job(tmp_path: Path, endpoint: str, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf-home"),
                        "QWEN3_TRAINER_WEIGHTS": str(tmp_path / "weights"), "HF_HUB_DISABLE_TELEMETRY": "1",
                        "HF_HUB_ETAG_TIMEOUT": "5", "HF_HUB_DOWNLOAD_TIMEOUT": "10"}
    env.pop("HF_TOKEN", None)
    command = [sys.executable, str(REPO / "scripts" / "train_whoami.py"), "--model", HUB_ID,
               "--out", str(tmp_path / "out"), *QUICK_RUN, *extra]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def one_line_error(run: subprocess.CompletedProcess) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    assert "Traceback" not in run.stderr, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: cannot download owner/tiny-world: "), run.stderr
    return line


def fetched(behaviour: HubBehaviour) -> list[str]:
    return [path.rsplit("/", 1)[-1] for method, path, _ in behaviour.requests if method == "GET" and "/resolve/" in path]


def test_a_hub_id_downloads_into_weights_and_trains_then_runs_again_offline(tmp_path, repository):
    local = tmp_path / "weights" / "owner--tiny-world"
    with HubStandIn(HUB_ID, repository) as hub:
        first = run_job(tmp_path, hub.endpoint)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"model {local} |" in first.stdout
    assert sorted(fetched(hub.behaviour)) == sorted(["config.json", "generation_config.json", "tokenizer.json",
                                                     "tokenizer_config.json", SHARD])  # no .bin, no README
    assert sorted(p.name for p in local.iterdir() if p.is_file()) == sorted(fetched(hub.behaviour))
    assert (local / SHARD).read_bytes() == (repository / SHARD).read_bytes()
    second = run_job(tmp_path, hub.endpoint)  # the server is stopped now: nothing answers on that port
    assert second.returncode == 0, second.stdout + second.stderr
    assert f"model {local} |" in second.stdout


def test_a_connection_dropped_once_mid_shard_is_resumed_with_a_range_request(tmp_path, repository):
    behaviour = HubBehaviour(drop_in=SHARD, drops_left=1)
    with HubStandIn(HUB_ID, repository, behaviour) as hub:
        run = run_job(tmp_path, hub.endpoint)
    assert run.returncode == 0, run.stdout + run.stderr
    shard_gets = [rng for method, path, rng in behaviour.requests if method == "GET" and path.endswith(SHARD)]
    size = (repository / SHARD).stat().st_size
    # the second GET asks only for what did not arrive (the client resumes from what it flushed to disk)
    assert len(shard_gets) == 2 and shard_gets[0] == "" and shard_gets[1].startswith("bytes=")
    assert 0 < int(shard_gets[1].removeprefix("bytes=").rstrip("-")) <= size // 2
    assert (tmp_path / "weights" / "owner--tiny-world" / SHARD).read_bytes() == (repository / SHARD).read_bytes()


def test_a_shard_that_never_arrives_is_one_line_and_never_loaded_later(tmp_path, repository):
    local = tmp_path / "weights" / "owner--tiny-world"
    with HubStandIn(HUB_ID, repository, HubBehaviour(drop_in=SHARD, drops_left=1000)) as hub:
        run = run_job(tmp_path, hub.endpoint)
    assert "the transfer failed" in one_line_error(run) and "run the same command again to resume" in run.stderr
    assert not (local / SHARD).exists() and not (tmp_path / "out").exists()
    offline = run_job(tmp_path, hub.endpoint)  # no server: only the half-finished folder is there
    line = one_line_error(offline)
    assert "incomplete" in line or "no complete earlier download" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("status", "says"), [
    (401, "the repository is gated (401): accept its terms on https://huggingface.co/owner/tiny-world"),
    (404, "no such repository on the Hub (404), or it is private: check the id"),
    (500, "the Hub answered 500; try again later"),
])
def test_hub_errors_are_one_line_naming_the_repository(tmp_path, repository, status, says):
    with HubStandIn(HUB_ID, repository, HubBehaviour(status=status)) as hub:
        run = run_job(tmp_path, hub.endpoint)
    assert says in one_line_error(run)
    assert not (tmp_path / "out").exists() and fetched(hub.behaviour) == []
    local = tmp_path / "weights" / "owner--tiny-world"
    assert not local.exists() or not any(p.is_file() for p in local.iterdir())
