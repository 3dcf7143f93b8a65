"""The method registry: what each method is, asked in one place, and nobody else asking by name."""

import ast
from pathlib import Path

import pytest
import torch

from megatron_ponder.ponder.registry import METHODS, VANILLA, get_method, names_where

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
    m = get_method(name)
    assert m.name == name
    assert (m.uses_router, m.uses_pause, m.uses_jacobi, m.decodes_with_slot_cache, m.plain,
            m.latent_steps(K), m.slots_per_token(K)) == FACTS[name]


def test_registry_order_and_lookups():
    assert METHODS == tuple(FACTS)
    assert VANILLA is get_method("vanilla")
    assert names_where(lambda m: m.decodes_with_slot_cache) == [
        "vanilla", "ponderlm2", "pause", "ponderlm3"]
    with pytest.raises(ValueError, match=r"ponder.method='ponderlm9' is invalid: valid values: "
                                         r"vanilla, ponderlm1, ponderlm2, loop, pause, ponderlm3"):
        get_method("ponderlm9")


def test_executed_steps_fixed_for_k_and_the_router_decision():
    # method.md section 6: Loop and PonderLM-1 run K+1 passes per token, K pondering steps
    # beyond the token's own pass, as PonderLM-2 runs K latent slots beyond its own slot.
    assert {n: get_method(n).executed_steps(K) for n in METHODS if not get_method(n).uses_router} == {
        "vanilla": 0.0, "ponderlm1": 3.0, "ponderlm2": 3.0, "loop": 3.0, "pause": 3.0}
    kept = torch.tensor([[3, 0, 1], [2, 2, 0]])
    assert get_method("ponderlm3").executed_steps(K, kept) == pytest.approx(8 / 6, rel=1e-15)  # fp64
    with pytest.raises(ValueError, match="kept_steps"):
        get_method("ponderlm3").executed_steps(K)


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
