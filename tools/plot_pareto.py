#!/usr/bin/env python3
"""Plot a sweep's records: perplexity vs inference FLOPs per token (one series per method,
the Pareto frontier drawn) and a saturating power-law fit L = E + A (x / x_min)^-alpha of
validation loss against non-embedding parameters or training FLOPs (scipy.optimize.
curve_fit, least squares over every seed), with its residuals.

    python tools/plot_pareto.py runs/sweeps/pareto-cpu/records --out docs/results/pareto-cpu

Writes OUT/pareto.{png,svg}, OUT/scaling.{png,svg} (when some configuration was trained at
>= 3 sizes), OUT/table.md (the aggregated table), OUT/scaling_fit.json, and OUT/matching.md
when PonderLM-2 and PonderLM-3 share a size: the FLOPs at which PonderLM-3 (tau from its
FLOPs budgets) reaches each PonderLM-2's perplexity, and where vanilla does
(megatron_ponder/sweeps/matching.py). Records that
are malformed or cannot be compared (another sweep, other training tokens, a repeated run,
seeds with different taus) are refused with the file and field named. Exit codes: 0 done,
2 bad records or an --out that holds a training run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records", help="directory of <run_id>.json records (tools/sweep.py)")
    parser.add_argument("--out", required=True, help="output directory for plots and tables")
    parser.add_argument("--fit-x", choices=("non_embedding_parameters", "parameters",
                                            "training_flops"),
                        default="non_embedding_parameters", help="x of the scaling-law fit")
    parser.add_argument("--title", default=None, help="plot title (default: the sweep name)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))  # imported after parsing: --help needs no matplotlib
    # defer: torch and matplotlib, only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT
    from megatron_ponder.run.layout import check_output_dir
    from megatron_ponder.sweeps import matching
    from megatron_ponder.sweeps.pareto import aggregate, fit_scaling_law, pareto_frontier
    from megatron_ponder.sweeps.plots import markdown_table, plot_pareto, plot_scaling
    from megatron_ponder.sweeps.records import RecordError, load_records

    try:
        check_output_dir(args.out, "--out")
        records = load_records(Path(args.records))
        print(f"read {len(records)} records from {args.records}")
        points = aggregate(records)
    except (RecordError, ConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    out = Path(args.out)
    title = args.title or records[0]["sweep"]
    written = plot_pareto(points, out, f"{title}: perplexity vs inference FLOPs")
    frontier = pareto_frontier(points)
    print(f"{len(points)} configuration x tau points; Pareto frontier: "
          + "; ".join(p.label for p in frontier))
    table = markdown_table(points)
    _write(out / "table.md", table)
    written.append(out / "table.md")
    fits = fit_scaling_law(records, args.fit_x)
    if fits:
        written += plot_scaling(fits, out, f"{title}: loss vs {args.fit_x.replace('_', ' ')}")
        for fit in fits:
            print(f"fit {fit.series}: L = {fit.e:.4f} + {fit.a:.4f} (x / {fit.x_scale:.4g})^-"
                  f"{fit.alpha:.4f}; stderr E {fit.stderr[0]:.3g}, A {fit.stderr[1]:.3g}, "
                  f"alpha {fit.stderr[2]:.3g}; max |residual| "
                  f"{max(abs(r) for r in fit.residuals):.4f} over {len(fit.x)} runs")
    else:
        print("no scaling-law fit: no configuration was trained at >= 3 sizes")
    _write(out / "scaling_fit.json", json.dumps([asdict(f) for f in fits], indent=1) + "\n")
    written.append(out / "scaling_fit.json")
    rows = matching.matches(records)
    if rows:
        _write(out / "matching.md", matching.markdown(rows))
        written.append(out / "matching.md")
    for path in written:
        print(f"wrote {path}")
    return 0


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
