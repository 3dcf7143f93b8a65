"""Figures and the table of a sweep: matplotlib (Agg) PNG + SVG, a markdown table."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from megatron_ponder.ponder.registry import method_class  # noqa: E402
from megatron_ponder.sweeps.pareto import Fit, Point, pareto_frontier  # noqa: E402


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for suffix in (".png", ".svg"):
        path = out_dir / f"{stem}{suffix}"
        tmp = path.with_name(f"{path.stem}.tmp{suffix}")
        fig.savefig(tmp, dpi=150, bbox_inches="tight")
        tmp.replace(path)
        paths.append(path)
    plt.close(fig)
    return paths


def plot_pareto(points: list[Point], out_dir: Path, title: str) -> list[Path]:
    """ppl vs inference FLOPs per token: one series per method, seed spread as error bars,
    the Pareto frontier as a dashed step line."""
    fig, ax = plt.subplots(figsize=(8, 5.5))
    series: dict[str, list[Point]] = {}
    for point in points:
        series.setdefault(point.series, []).append(point)
    for name, members in sorted(series.items()):
        members = sorted(members, key=lambda p: p.flops_per_token)
        x = [p.flops_per_token for p in members]
        ax.errorbar(x, [p.ppl for p in members], yerr=[p.ppl_spread for p in members],
                    marker="o", markersize=4, capsize=2, linewidth=1, label=name)
        method = method_class(members[0].method)
        if not method.uses_router:  # points of a fixed-step series differ in K or in size
            for p in members:
                tag = f"K{p.k}" if method(k=p.k).latent_steps else p.size
                ax.annotate(tag, (p.flops_per_token, p.ppl), textcoords="offset points",
                            xytext=(4, 4), fontsize=7)
    frontier = pareto_frontier(points)
    ax.step([p.flops_per_token for p in frontier], [p.ppl for p in frontier], where="post",
            color="black", linestyle="--", linewidth=1, label="Pareto frontier")
    ax.set_xscale("log")
    ax.set_xlabel("inference FLOPs per token (KV cache, method.md section 6)")
    ax.set_ylabel("validation perplexity (hard-masked scoring)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, out_dir, "pareto")


def plot_scaling(fits: list[Fit], out_dir: Path, title: str) -> list[Path]:
    """Loss vs x with the fitted curve (top) and the residuals (bottom)."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True,
                                      gridspec_kw={"height_ratios": [3, 1]})
    for fit in fits:
        line = top.scatter(fit.x, fit.loss, s=14, label=f"{fit.series} (runs)")
        grid = np.geomspace(min(fit.x), max(fit.x), 100)
        top.plot(grid, fit.predict(grid), color=line.get_facecolor()[0], linewidth=1,
                 label=f"{fit.series}: L = {fit.e:.3f} + {fit.a:.3f} (x/{fit.x_scale:.3g})"
                       f"^-{fit.alpha:.3f}")
        bottom.scatter(fit.x, fit.residuals, s=14, color=line.get_facecolor()[0])
    bottom.axhline(0.0, color="black", linewidth=0.8)
    top.set_xscale("log")
    top.set_ylabel("validation loss (nats/token)")
    top.set_title(title)
    top.legend(fontsize=7)
    top.grid(True, which="both", alpha=0.3)
    bottom.set_ylabel("residual")
    bottom.set_xlabel(fits[0].x_name.replace("_", " ") if fits else "")
    bottom.grid(True, which="both", alpha=0.3)
    return _save(fig, out_dir, "scaling")


def markdown_table(points: list[Point]) -> str:
    rows = ["| size | method | K | lambda | variant | tau | ppl (mean +- spread) | soft ppl | "
            "FLOPs/token vs vanilla | expected steps | executed steps | seeds |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    order = sorted(points, key=lambda p: (p.parameters, p.method, p.k, p.lam, p.variant or "",
                                          p.tau or 0.0))
    for p in order:
        tau = "-" if p.tau is None else f"{p.tau:g}"
        rows.append(f"| {p.size} | {p.method} | {p.k} | {p.lam:g} | {p.variant or '-'} | {tau} | "
                    f"{p.ppl:.2f} +- "
                    f"{p.ppl_spread:.2f} | {p.soft_ppl:.2f} | {p.flops_vs_vanilla:.3f} | "
                    f"{p.expected_steps:.3f} | {p.executed_steps:.3f} | {p.seeds} |")
    return "\n".join(rows) + "\n"
