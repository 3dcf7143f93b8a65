"""Dependencies between the package's parts point one way (docs/architecture.md):
ponder, attention <- config <- run, comm_device, memory <- data, parallel, model <- training,
inference, export, launch <- sweeps <- the entry points (train.py, demo.py). Every import counts,
also those inside functions. No file imports itself back through others, and an import inside a
function (in the package, tools/ and bench/) carries a comment saying what it defers."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "megatron_ponder"
# A part may import only parts of a lower level.
LEVEL = {
    "ponder": 0, "attention": 0,
    "config": 1,
    "run": 2,  # a run's life: layout, lock, signals, checkpoints, exit codes
    "comm_device": 2,  # the device of tensors handed to torch.distributed: model/ needs it too
    "memory": 2,  # the memory planner: reads configs and method programs
    "data": 3, "parallel": 3, "model": 3,
    "training": 4, "inference": 4, "export": 4,
    "launch": 4,  # the batch scripts' helpers: the exit codes and the lock come from run/
    "sweeps": 5,
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


# --- No file circles, and no import inside a function without its reason (issue 24) ---

ROOT = PACKAGE.parent
# An import inside a function is kept only to defer a heavy optional dependency (matplotlib,
# transformers, pyarrow, deepspeed, transformer_engine, wandb, ...) or for an ordering
# constraint (train.py's signal handlers come before torch); the comment on its line or the
# line above (of a run of imports: above the first) says which, with one of these markers.
DEFER_MARKERS = ("defer:", "only when")


def _statement_lists(node: ast.AST):
    for name in ("body", "orelse", "finalbody"):
        stmts = getattr(node, name, None)
        if isinstance(stmts, list) and stmts and isinstance(stmts[0], ast.stmt):
            yield stmts


def _import_runs(stmts: list[ast.stmt]):
    """Runs of consecutive import statements in one statement list."""
    run = []
    for stmt in stmts + [None]:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            run.append(stmt)
            continue
        if run:
            yield run
        run = []


def unexplained_inner_imports(path: Path) -> list[str]:
    """'name:line: import' for each import inside a function whose run of imports carries no
    marker on its lines or on the line just above it."""
    source = path.read_text()
    lines = source.splitlines()
    seen, found = set(), []
    for func in ast.walk(ast.parse(source)):
        if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        for node in ast.walk(func):
            for stmts in _statement_lists(node):
                for run in _import_runs(stmts):
                    if run[0].lineno in seen:  # a nested function, walked again
                        continue
                    seen.add(run[0].lineno)
                    text = "\n".join(lines[max(run[0].lineno - 2, 0):run[-1].end_lineno])
                    if not any(marker in text for marker in DEFER_MARKERS):
                        found += [f"{path.name}:{i.lineno}: "
                                  f"{lines[i.lineno - 1].strip()}" for i in run]
    return found


def _checked_files() -> list[Path]:
    return (sorted(PACKAGE.rglob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
            + sorted((ROOT / "bench").glob("*.py")))


def test_an_import_inside_a_function_says_what_it_defers():
    found = [f"{path.parent.relative_to(ROOT)}/{line}" for path in _checked_files()
             for line in unexplained_inner_imports(path)]
    assert found == [], ("move these imports to the module's top, or say on the line (or the "
                         f"line above) what they defer with one of {DEFER_MARKERS}:\n"
                         + "\n".join(found))


def test_the_marker_check_sees_a_bare_import_and_accepts_a_marked_one(tmp_path):
    module = tmp_path / "module.py"
    module.write_text("def f():\n    import json\n\n\n"
                      "def g():\n    # defer: scipy, only when fitting\n    import scipy\n    import os\n\n\n"
                      "def h():\n    if True:\n        import csv  # defer: csv\n")
    assert [line.split(": ", 1)[1] for line in unexplained_inner_imports(module)] == ["import json"]


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The package modules `path` imports, anywhere in the file; `from a import b` counts as
    a.b where a.b is a module, else as a (a package __init__ is not counted for its
    submodules' sake: importing a.b runs a/__init__.py, but that is no dependency of the file)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base)
    return (found & modules) - {this}


def import_cycles() -> list[list[str]]:
    """Every strongly connected set of package modules (a cycle of any length), each as a
    sorted list."""
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    edges = {name: _imported_modules(path, set(paths)) for name, path in paths.items()}
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node: str) -> None:  # Tarjan's strongly connected components
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(edges):
        if name not in index:
            visit(name)
    return cycles


def test_no_file_imports_itself_back():
    """No module A imports B that (at any depth) imports A, also through imports inside
    functions: a circle is code in the wrong file (sweeps/usage.py broke runner <-> evaluate)."""
    assert import_cycles() == []


# --- docs/architecture.md and the README's layout describe this house ---

def _documented_levels() -> dict[str, int]:
    """The import-level table of docs/architecture.md: | level | `part`, `part` |."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    levels = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            for part in cells[1].split(","):
                levels[part.split("(")[0].strip().strip("`")] = int(cells[0])
    return levels


def test_architecture_doc_states_the_enforced_levels():
    assert _documented_levels() == LEVEL


def test_architecture_doc_and_readme_name_every_part():
    parts = {part_of(p) for p in PACKAGE.rglob("*.py")} - {"__init__"}
    readme = (ROOT / "README.md").read_text()
    layout = readme[readme.index("## Layout"):readme.index("Imports point one way")]
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    for name, text in (("README.md's Layout", layout), ("docs/architecture.md", architecture)):
        missing = sorted(p for p in parts if f"{p}/" not in text and f"{p}.py" not in text)
        assert missing == [], f"{name} does not describe {missing}"
