"""Loading never runs code: no pickle anywhere in the project, and a model folder's .py files stay unread."""

import ast
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from trainer.job.loading import load_model
from trainer.text.tokenizer import tiny_tokenizer_path

ROOT = Path(__file__).resolve().parent.parent
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "shelve", "marshal"}


def unsafe_lines(source: str) -> list[str]:
    """`torch.load(...)` calls without weights_only=True, and imports of pickle-like modules."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("torch.load", "load") and (
                ast.unparse(node.func) == "torch.load" or "from torch import load" in source):
            safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                       for k in node.keywords)
            if not safe:
                found.append(f"line {node.lineno}: {ast.unparse(node)}")
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.split(".")[0] in PICKLE_MODULES]
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            found.append(f"line {node.lineno}: from {node.module} import ...")
    return found


def project_sources() -> list[Path]:
    files = sorted((ROOT / "trainer").rglob("*.py")) + sorted((ROOT / "scripts").rglob("*.py"))
    assert len(files) > 20  # the scan really sees the project
    return files


def test_the_scanner_catches_what_it_looks_for():
    assert unsafe_lines("import torch\nx = torch.load('a.pt')\n") == ["line 2: torch.load('a.pt')"]
    assert unsafe_lines("import torch\nx = torch.load('a.pt', weights_only=False)\n") != []
    assert unsafe_lines("import torch\nx = torch.load('a.pt', weights_only=True)\n") == []
    assert unsafe_lines("from torch import load\nx = load(p)\n") == ["line 2: load(p)"]
    assert unsafe_lines("import pickle as p\n") == ["line 1: import pickle"]
    assert unsafe_lines("from dill import loads\n") == ["line 1: from dill import ..."]


@pytest.mark.parametrize("path", project_sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_pickle_and_no_unsafe_torch_load(path):
    source = path.read_text(encoding="utf-8")
    assert unsafe_lines(source) == []
    assert "torch.load(" not in source or "weights_only=True" in source  # the plain-text view agrees


class WritesMarker:
    """Unpickling this creates a file: proof that a pickle was opened."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def booby_trapped_model(hf_qwen3, tmp_path: Path) -> tuple[Path, Path, object]:
    """A valid model folder plus remote-code .py files and a pickle, each creating `marker` if run."""
    model, folder = hf_qwen3("trapped", vocab_size=151936, hidden_size=32, intermediate_size=64, head_dim=8)
    shutil.copyfile(tiny_tokenizer_path(), folder / "tokenizer.json")
    marker = tmp_path / "code-ran"
    payload = f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
    for name in ("__init__.py", "modeling_qwen3.py", "configuration_qwen3.py", "tokenization_qwen3.py"):
        (folder / name).write_text(payload, encoding="utf-8")
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    config["auto_map"] = {"AutoConfig": "configuration_qwen3.Qwen3Config",
                          "AutoModelForCausalLM": "modeling_qwen3.Qwen3ForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (folder / "pytorch_model.bin").write_bytes(pickle.dumps(WritesMarker(marker)))
    return folder, marker, model


def test_loading_a_model_folder_never_runs_its_python_files_or_pickles(hf_qwen3, qwen_tokenizer, tmp_path, monkeypatch):
    folder, marker, reference = booby_trapped_model(hf_qwen3, tmp_path)
    monkeypatch.chdir(folder)  # even with the folder as the working directory
    loaded = load_model(folder)
    assert not marker.exists()
    expected = reference.state_dict()
    assert torch.equal(loaded.weights["model.layers.1.mlp.down_proj.weight"],
                       expected["model.layers.1.mlp.down_proj.weight"])
    assert loaded.tokenizer.encode("你是誰 <|im_end|>") == qwen_tokenizer.encode("你是誰 <|im_end|>")
    pickle.loads((folder / "pytorch_model.bin").read_bytes())  # the trap is live: opening it does run code
    assert marker.exists()
