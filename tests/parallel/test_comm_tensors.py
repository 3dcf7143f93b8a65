"""Every tensor created in a file that calls torch.distributed is made on the communication
device (megatron_ponder/comm_device.py), so none reaches NCCL from the CPU (issue 20,
defect 1: the pipeline's `idle` tensor).

The rule is static and deliberately simple (on a CPU machine every tensor is on the CPU, so
no run can show this): in a module that imports torch.distributed, a tensor constructor
(torch.tensor, zeros, ones, empty, full, arange, rand*, *_like, ...) must pass
`device=comm_device()`, be moved with `.to(comm_device())`, or be listed in ALLOWED with
the reason its tensor never reaches a distributed call. The helpers comm_tensor / comm_empty
are not constructors by this rule: they are the way to make one.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "megatron_ponder"
CONSTRUCTORS = {"tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "eye",
                "linspace", "rand", "randn", "randint", "empty_strided", "zeros_like",
                "ones_like", "empty_like", "full_like", "rand_like", "randn_like", "randint_like"}
# (file, the call's source) -> why its tensor is never handed to torch.distributed
ALLOWED = {
    ("model/decoder.py", "torch.empty(m.hidden_size)"):
        "a Parameter: it lives on the model's device and moves with the model",
    ("training/engines/base.py", "torch.tensor(norm)"):
        "clip_gradients reads it with .item()",
    ("training/engines/base.py", "torch.tensor(0.0)"):
        "AdamW's step count in the optimizer state (saved, never communicated)",
    ("training/engines/base.py", "torch.zeros_like(p)"):
        "AdamW moments in the optimizer state, on the parameter's device",
    ("training/engines/base.py", "torch.tensor(adam_step)"):
        "AdamW's step count in the optimizer state (saved, never communicated)",
}


def _calls_distributed(tree: ast.Module) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(a.name.startswith("torch.distributed") for a in node.names):
            return True
        if isinstance(node, ast.ImportFrom) and node.module and (
                node.module.startswith("torch.distributed")
                or (node.module == "torch" and any(a.name == "distributed" for a in node.names))):
            return True
    return False


def _constructor_name(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "torch":
        return func.attr if func.attr in CONSTRUCTORS else None
    if isinstance(func, ast.Name) and func.id in CONSTRUCTORS - {"tensor"}:
        return func.id  # from torch import zeros_like
    return None


def _names_comm_device(node: ast.AST) -> bool:
    return "comm_device()" in ast.unparse(node)


def unguarded_constructors(path: Path, root: Path = PACKAGE) -> list[str]:
    """'file: source' (file relative to root) of each constructor in `path` that the rule
    does not accept."""
    tree = ast.parse(path.read_text())
    if not _calls_distributed(tree):
        return []
    moved = set()  # constructors whose result is moved with .to(comm_device())
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "to" and any(map(_names_comm_device, node.args + node.keywords))):
            moved.add(id(node.func.value))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _constructor_name(node) is None or id(node) in moved:
            continue
        if any(k.arg == "device" and _names_comm_device(k.value) for k in node.keywords):
            continue
        found.append(f"{path.relative_to(root).as_posix()}: {ast.unparse(node)}")
    return found


def test_no_tensor_reaches_torch_distributed_off_the_communication_device():
    found = [hit for path in sorted(PACKAGE.rglob("*.py")) for hit in unguarded_constructors(path)]
    allowed = {f"{file}: {source}" for file, source in ALLOWED}
    unexplained = sorted(set(found) - allowed)
    assert unexplained == [], (
        "tensors created without the communication device in modules that call torch.distributed; "
        "use megatron_ponder.comm_device (comm_tensor, comm_empty, device=comm_device()) or add "
        f"the call to ALLOWED with the reason it is never communicated: {unexplained}")
    assert sorted(allowed - set(found)) == [], "ALLOWED lists calls that no longer exist"


def test_the_rule_catches_defect_1(tmp_path):
    """The pipeline's `idle` tensor as it was (CPU under NCCL) is caught; the fixed line is not."""
    module = tmp_path / "pipeline.py"
    module.write_text(
        "import torch\nimport torch.distributed as dist\n"
        "idle = torch.tensor([0.5], dtype=torch.float64)\n"
        "fixed = torch.tensor([0.5], dtype=torch.float64, device=comm_device())\n"
        "moved = torch.zeros(3).to(comm_device())\n"
        "dist.all_reduce(idle)\n")
    assert unguarded_constructors(module, tmp_path) == [
        "pipeline.py: torch.tensor([0.5], dtype=torch.float64)"]
