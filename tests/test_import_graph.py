"""Dependencies between the package's parts point one way (architecture.md):
ponder, attention <- config <- run, comm_device <- data, parallel, model <- training, inference,
export, launch <- sweeps, memory <- the entry points (train.py, demo.py). Every import counts,
also those inside functions."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "megatron_ponder"
# A part may import only parts of a lower level.
LEVEL = {
    "ponder": 0, "attention": 0,
    "config": 1,
    "run": 2,  # a run's life: layout, lock, signals, checkpoints, exit codes
    "comm_device": 2,  # the device of tensors handed to torch.distributed: model/ needs it too
    "data": 3, "parallel": 3, "model": 3,
    "training": 4, "inference": 4, "export": 4,
    "launch": 4,  # the batch scripts' helpers: the exit codes and the lock come from run/
    "sweeps": 5,
    "memory": 5,  # the memory planner: reads configs, method programs and training's precision
    "demo": 6, "train": 6,  # the entry points
}


def part_of(path: Path) -> str:
    first = path.relative_to(PACKAGE).parts[0]
    return first.removesuffix(".py")


def imported_parts(path: Path) -> set[str]:
    parts = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        parts |= {n.split(".")[1] for n in names if n.startswith("megatron_ponder.")}
    return parts - {part_of(path)}


def test_every_part_has_a_level():
    parts = {part_of(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    assert parts <= set(LEVEL), f"give {sorted(parts - set(LEVEL))} a level in LEVEL"


def test_dependencies_point_down_only():
    upward = sorted(
        f"{path.relative_to(PACKAGE.parent)} imports megatron_ponder.{part}"
        for path in PACKAGE.rglob("*.py") if part_of(path) in LEVEL
        for part in imported_parts(path) if LEVEL.get(part, 99) >= LEVEL[part_of(path)])
    assert upward == []


def test_the_method_imports_nothing_of_the_package_but_itself():
    for path in (PACKAGE / "ponder").rglob("*.py"):
        assert imported_parts(path) == set(), path
