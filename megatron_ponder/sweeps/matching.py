"""The inference FLOPs at which PonderLM-3 reaches PonderLM-2's perplexity, and where a
wider vanilla model gets there first (issue 14's result, docs/results/pareto-cpu.md).

Per PonderLM-3 run the curve is ppl against inference FLOPs per token over the record's
FLOPs-budget entries (tau calibrated per budget: what a user of --flops-budget gets; the
eval-tau entries when a record has no budgets); the FLOPs to reach a
target ppl are where that curve, walked from its cheapest point, first gets to the target
(linear interpolation between the two points around it). If even the cheapest point
beats the target, that point's FLOPs are an upper bound ("<="). PonderLM-2 targets are seed
means; PonderLM-3 is matched seed by seed and reported as mean +- half the range. Vanilla is
one curve over its widths (seed means).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megatron_ponder.ponder.registry import method_class


def run_curve(record: dict) -> list[tuple[float, float]]:
    """(FLOPs per token, ppl) of a record's budget entries (else its tau entries), by FLOPs."""
    entries = [b for b in record.get("budgets", []) if "ppl" in b] or record["inference"]
    return sorted((e["flops_per_token"], e["ppl"]) for e in entries)


def flops_to_reach(curve: list[tuple[float, float]], target: float) -> tuple[float, bool] | None:
    """(FLOPs, bound) where the curve first reaches ppl <= target (bound: the cheapest point
    already does, so the true crossing may be cheaper); None if it never does."""
    for i, (flops, ppl) in enumerate(curve):
        if ppl <= target:
            if i == 0:
                return flops, True
            f0, p0 = curve[i - 1]
            return f0 + (flops - f0) * (p0 - target) / (p0 - ppl), False
    return None


@dataclass
class Match:
    size: str
    k: int  # PonderLM-2's K
    target_ppl: float
    target_spread: float
    target_flops: float
    config: str  # the PonderLM-3 configuration
    ratios: list[float | None]  # per seed: PonderLM-3's FLOPs to reach / PonderLM-2's
    bound: bool
    best_ppl: float  # PonderLM-3's lowest ppl (seed mean of each seed's best)
    vanilla_ratio: float | None  # vanilla's FLOPs to reach the target / PonderLM-2's
    vanilla_bound: bool


def _config_name(record: dict) -> str:
    p = record["point"]
    variant = f" {p['variant']}" if p.get("variant") else ""
    return f"lambda {p['lambda']:g}{variant}"


def _fixed_latent_thoughts(method: str) -> bool:
    """PonderLM-2: the latent thoughts of the router methods, every step kept."""
    m = method_class(method)
    return m.uses_jacobi and not m.uses_router


def _mean_spread(values: list[float]) -> tuple[float, float]:
    return float(np.mean(values)), (max(values) - min(values)) / 2


def vanilla_curve(records: list[dict]) -> list[tuple[float, float]]:
    by_size: dict[str, list[dict]] = {}
    for r in records:
        if method_class(r["point"]["method"]).plain and not r["point"].get("variant"):
            by_size.setdefault(r["point"]["size"], []).append(r)
    return sorted((group[0]["inference"][0]["flops_per_token"],
                   float(np.mean([r["inference"][0]["ppl"] for r in group])))
                  for group in by_size.values())


def matches(records: list[dict]) -> list[Match]:
    """One row per (size, PonderLM-2 K, PonderLM-3 configuration at that size)."""
    vanilla = vanilla_curve(records)
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        p = r["point"]
        groups.setdefault((p["size"], p["method"], p["k"], _config_name(r)), []).append(r)
    rows = []
    for (size, method, k, _), pl2 in sorted(groups.items()):
        if not _fixed_latent_thoughts(method):
            continue
        target, spread = _mean_spread([r["inference"][0]["ppl"] for r in pl2])
        target_flops = pl2[0]["inference"][0]["flops_per_token"]
        reach_vanilla = flops_to_reach(vanilla, target)
        for (size3, method3, _, name), pl3 in sorted(groups.items()):
            if not method_class(method3).uses_router or size3 != size:
                continue
            reached = [flops_to_reach(run_curve(r), target) for r in sorted(
                pl3, key=lambda r: r["point"]["seed"])]
            rows.append(Match(
                size, k, target, spread, target_flops, name,
                [None if x is None else x[0] / target_flops for x in reached],
                any(x is not None and x[1] for x in reached),
                float(np.mean([min(p for _, p in run_curve(r)) for r in pl3])),
                None if reach_vanilla is None else reach_vanilla[0] / target_flops,
                bool(reach_vanilla and reach_vanilla[1])))
    return rows


def markdown(rows: list[Match]) -> str:
    lines = ["| size | PonderLM-2 K | its ppl | PonderLM-3 | FLOPs to reach it / PonderLM-2's "
             "(per seed) | mean +- spread | best PonderLM-3 ppl | vanilla FLOPs to reach it / "
             "PonderLM-2's |", "|---|---|---|---|---|---|---|---|"]
    for m in rows:
        per_seed = ", ".join("not reached" if r is None else f"{r:.3f}" for r in m.ratios)
        if all(r is not None for r in m.ratios):
            mean, spread = _mean_spread(m.ratios)
            summary = f"{'<= ' if m.bound else ''}{mean:.3f} +- {spread:.3f}"
        else:
            summary = "-"
        vanilla = ("not reached" if m.vanilla_ratio is None
                   else f"{'<= ' if m.vanilla_bound else ''}{m.vanilla_ratio:.3f}")
        lines.append(f"| {m.size} | {m.k} | {m.target_ppl:.2f} +- {m.target_spread:.2f} | "
                     f"{m.config} | {per_seed} | {summary} | {m.best_ppl:.2f} | {vanilla} |")
    return "\n".join(lines) + "\n"
