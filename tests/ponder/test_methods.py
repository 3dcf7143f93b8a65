"""The method registry: what each method is, asked in one place, and nobody else asking by name."""

import ast
from pathlib import Path

import pytest
import torch

from megatron_ponder.ponder.registry import METHODS, VANILLA, get_method, method_class, names_where

REPO = Path(__file__).resolve().parents[2]
K = 3
# name: router, pause, Jacobi, slot cache, plain, latent steps at K = 3, slots per token
FACTS = {
    "vanilla": (False, False, False, True, True, 0, 1),
    "ponderlm1": (False, False, False, False, False, 3, 1),  # K extra passes of the stack
    "ponderlm2": (False, False, True, True, False, 3, 4),
    "loop": (False, False, False, False, False, 3, 1),
    "pause": (False, True, False, True, False, 3, 4),
    "ponderlm3": (True, False, True, True, False, 3, 4),  # at most K
}


@pytest.mark.parametrize("name", METHODS)
def test_each_method_describes_itself(name):
    m = method_class(name)(k=K)
    assert m.name == name
    assert (m.uses_router, m.uses_pause, m.uses_jacobi, m.decodes_with_slot_cache, m.plain,
            m.latent_steps, m.slots_per_token) == FACTS[name]


def test_registry_order_and_lookups():
    assert METHODS == tuple(FACTS)
    assert type(VANILLA) is method_class("vanilla") and VANILLA.latent_steps == 0
    assert names_where(lambda m: m.decodes_with_slot_cache) == [
        "vanilla", "ponderlm2", "pause", "ponderlm3"]
    with pytest.raises(ValueError, match=r"ponder.method='ponderlm9' is invalid: valid values: "
                                         r"vanilla, ponderlm1, ponderlm2, loop, pause, ponderlm3"):
        method_class("ponderlm9")


def test_executed_steps_fixed_for_k_and_the_router_decision():
    # method.md section 6: Loop and PonderLM-1 run K+1 passes per token, K pondering steps
    # beyond the token's own pass, as PonderLM-2 runs K latent slots beyond its own slot.
    assert {n: method_class(n)(k=K).executed_steps() for n in METHODS
            if not method_class(n).uses_router} == {
        "vanilla": 0.0, "ponderlm1": 3.0, "ponderlm2": 3.0, "loop": 3.0, "pause": 3.0}
    kept = torch.tensor([[3, 0, 1], [2, 2, 0]])
    assert method_class("ponderlm3")(k=K).executed_steps(kept) == pytest.approx(8 / 6, rel=1e-15)  # fp64
    with pytest.raises(ValueError, match="kept_steps"):
        method_class("ponderlm3")(k=K).executed_steps()


def _method_literal(node) -> bool:
    if isinstance(node, ast.Constant):
        return node.value in METHODS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_method_literal(e) for e in node.elts)
    return False


def _name_comparisons(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare) and any(
                _method_literal(n) for n in [node.left, *node.comparators]):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("startswith", "endswith")
                and any(_method_literal(a) for a in node.args)):
            found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def test_no_code_outside_the_registry_compares_method_names():
    """`method == "ponderlm3"`, `method in ("vanilla", "pause")`: ask the Method object."""
    files = [p for folder in ("megatron_ponder", "tools", "bench")
             for p in sorted((REPO / folder).rglob("*.py"))
             if p != REPO / "megatron_ponder" / "ponder" / "registry.py"]
    assert len(files) > 50
    assert [hit for path in files for hit in _name_comparisons(path)] == []


def test_get_method_configures_the_method_from_the_ponder_section():
    """One object answers with the run's settings; nothing hands K, J, tau ... back to it."""
    from megatron_ponder.config import PonderConfig
    from megatron_ponder.ponder.method import jacobi_iterations

    p = PonderConfig(method="ponderlm3", k=2, tau=0.01, jacobi_train=[1, 4], jacobi_eval=5,
                     compute_penalty=0.1, decisive_weight=0.2, decisive_threshold=0.3,
                     grad_passes=1, latent_init="copy")
    m = get_method(p)
    assert type(m) is method_class("ponderlm3")
    assert (m.k, m.tau, m.jacobi_train, m.jacobi_eval, m.compute_penalty, m.decisive_weight,
            m.decisive_threshold, m.grad_passes, m.latent_init) == (
        2, 0.01, (1, 4), 5, 0.1, 0.2, 0.3, 1, "copy")
    assert (m.latent_steps, m.slots_per_token) == (2, 3)
    assert [m.jacobi_for_step(7, s) for s in range(50)] == [
        jacobi_iterations(7, s, [1, 4]) for s in range(50)]
    # A tool's tau: the same method, another threshold; the config's method is left alone.
    assert m.with_tau(0.5).tau == 0.5 and m.tau == 0.01 and m.with_tau(0.5).k == 2
    # The program takes J and the hard rule's tau; K, latent_init and grad_passes are the method's.
    tokens = torch.zeros(1, 4, dtype=torch.long, device="meta")
    program = m.program(None, tokens, jacobi=2, tau=0.5)
    assert program.passes == [1, 3, 3, 3] and program.first_pass_with_grad == 3
    assert program.tau == 0.5 and m.program(None, tokens).passes == [1] + [3] * 6  # J = jacobi_eval
    assert get_method(PonderConfig(method="ponderlm2")).program(None, tokens, tau=0.5).tau is None


# The settings the configured method holds. Reading them off the config outside ponder/ and
# config.py means a caller answers a method question itself (issue 24). Allowed: the places
# that write or show the config's values as such.
METHOD_SETTINGS = {"k", "tau", "jacobi_train", "jacobi_eval", "grad_passes", "latent_init",
                   "compute_penalty", "decisive_weight", "decisive_threshold"}
SHOWS_OR_WRITES_THE_CONFIG = {
    "megatron_ponder/export/hf_export.py",  # the export's config.json fields
    "megatron_ponder/demo.py", "tools/export_hf.py", "tools/convert_checkpoint.py",  # printed
}


def _setting_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    sections = set()  # local names bound to `<cfg>.ponder` (p = cfg.ponder; m, p = ...)
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target, value = node.targets[0], node.value
            pairs = (zip(target.elts, value.elts) if isinstance(target, ast.Tuple)
                     and isinstance(value, ast.Tuple) else [(target, value)])
            sections |= {t.id for t, v in pairs if isinstance(t, ast.Name)
                         and isinstance(v, ast.Attribute) and v.attr == "ponder"}
    return [f"{path.relative_to(REPO)}:{node.lineno} .{node.attr}" for node in ast.walk(tree)
            if isinstance(node, ast.Attribute) and node.attr in METHOD_SETTINGS
            and ((isinstance(node.value, ast.Attribute) and node.value.attr == "ponder")
                 or (isinstance(node.value, ast.Name) and node.value.id in sections))]


def test_no_caller_outside_the_method_reads_its_settings_off_the_config():
    """`training_flops(shape, cfg.ponder.k, ..., p.grad_passes)`: ask the configured method."""
    files = [p for folder in ("megatron_ponder", "tools", "bench")
             for p in sorted((REPO / folder).rglob("*.py"))
             if (REPO / "megatron_ponder" / "ponder") not in p.parents
             and p != REPO / "megatron_ponder" / "config.py"
             and str(p.relative_to(REPO)) not in SHOWS_OR_WRITES_THE_CONFIG]
    assert len(files) > 50
    hits = [hit for path in files for hit in _setting_reads(path)]
    assert hits == [], hits
