"""The package's floors: a module imports only from its own floor or the floors below it."""

import ast
from pathlib import Path

from trainer import PUBLIC

PACKAGE = Path(__file__).resolve().parent.parent / "trainer"
FLOORS = {
    "trainer.errors": 0, "trainer.paths": 0, "trainer.interrupts": 0, "trainer.progress": 0,  # plumbing every floor uses
    "trainer.text": 1,  # text -> examples -> batches
    "trainer.prep": 2, "trainer.qwen3": 2,  # your own data (no torch); the model
    "trainer.training": 3,
    "trainer.job": 4,
    "trainer.cli": 5, "trainer.commands": 5,  # the programs and what they share
}


def floor_of(module: str) -> int | None:
    """The floor of a dotted module name, from its longest listed prefix; None outside trainer."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in FLOORS:
            return FLOORS[".".join(parts[:end])]
    return None


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")


def imported_modules(path: Path) -> set[str]:
    """Every trainer module `path` imports, at the top or inside a function, as dotted names."""
    here = module_name(path).split(".")
    package = here if path.name == "__init__.py" else here[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            target = ".".join(base + (node.module.split(".") if node.module else []))
            found |= {target} | {f"{target}.{alias.name}" for alias in node.names}
    # `from trainer import X` (or `from .. import X`) loads X lazily from the module PUBLIC names
    return {f"trainer.{PUBLIC[name.removeprefix('trainer.')]}" if name.removeprefix("trainer.") in PUBLIC else name
            for name in found if name.startswith("trainer.")}


def test_every_module_has_a_floor():
    modules = [module_name(path) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py"]
    assert modules and all(floor_of(name) is not None for name in modules), \
        [name for name in modules if floor_of(name) is None]


def test_no_module_imports_from_a_higher_floor():
    upward = []
    for path in PACKAGE.rglob("*.py"):
        own = floor_of(module_name(path))
        if own is None:  # trainer/__init__.py: the lazy public names of every floor
            continue
        upward += [f"{module_name(path)} (floor {own}) imports {name} (floor {floor_of(name)})"
                   for name in sorted(imported_modules(path)) if floor_of(name) is None or floor_of(name) > own]
    assert upward == []
