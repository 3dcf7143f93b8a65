"""The per-token analysis (inference/adaptivity.py) as a Markdown table and a plot."""

from __future__ import annotations

from pathlib import Path

GROUPS = (("by_frequency_decile", "token frequency decile (1 = rarest)"),
          ("by_class", "token class"), ("by_position", "position in the sequence"),
          ("by_router_entropy", "router entropy (nats), quintiles"),
          ("by_next_token_loss", "next-token loss (nats), quintiles"))


def _step_columns(rows: list[dict]) -> list[str]:
    return ["expected_steps"] + [key for key in rows[0] if key.startswith("executed@")]


def markdown(summary: dict, title: str) -> str:
    o = summary["overall"]
    lines = [f"# {title}", "",
             f"{summary['positions']} positions, K = {summary['k']}. Expected steps (router, soft "
             f"forward): mean {o['expected_steps_mean']:.3f}, std {o['expected_steps_std']:.3f}, "
             "5/50/95% " + " / ".join(f"{q:.3f}" for q in o["expected_steps_p05_p50_p95"]) + ".",
             "Executed steps (hard rule): " + ", ".join(
                 f"tau {t}: {m:.3f} (tokens with 0..K steps: {o['executed_steps_histogram'][t]})"
                 for t, m in o["executed_steps_mean"].items()) + ".",
             f"Share of the variance of expected steps explained by the token id: "
             f"{o['token_identity_share_of_variance']:.3f}. Spearman correlation of expected "
             "steps with " + ", ".join(f"{k.replace('_', ' ')} {v:+.3f}"
                                       for k, v in o["spearman_expected_steps_vs"].items()) + ".",
             ""]
    for key, name in GROUPS:
        rows = summary[key]
        columns = _step_columns(rows)
        lines += [f"## By {name}", "",
                  "| group | count | " + " | ".join(c.replace("_", " ") for c in columns)
                  + " | router entropy | loss |",
                  "|---|---|" + "---|" * (len(columns) + 2)]
        lines += [f"| {r['group']} | {r['count']} | " + " | ".join(f"{r[c]:.3f}" for c in columns)
                  + f" | {r['router_entropy']:.3f} | {r['loss']:.3f} |" for r in rows]
        lines.append("")
    for key, name in (("fewest_steps", "fewest"), ("most_steps", "most")):
        lines += [f"## Tokens with the {name} expected steps (at least 20 occurrences)", "",
                  "| token | count | per million | expected steps |", "|---|---|---|---|"]
        lines += [f"| `{r['text']!r}` | {r['count']} | {r['per_million']:.0f} | "
                  f"{r['expected_steps']:.3f} |" for r in summary[key]]
        lines.append("")
    return "\n".join(lines)


def plot(summary: dict, title: str, path: Path) -> None:
    import matplotlib  # defer: matplotlib, only when plotting

    matplotlib.use("Agg")  # before pyplot's import: no display backend
    import matplotlib.pyplot as plt  # defer: matplotlib, only when plotting

    fig, axes = plt.subplots(1, len(GROUPS), figsize=(4.2 * len(GROUPS), 3.8), sharey=True)
    for ax, (key, name) in zip(axes, GROUPS):
        rows = summary[key]
        x = list(range(len(rows)))
        for column in _step_columns(rows):
            ax.plot(x, [r[column] for r in rows], marker="o",
                    label=column.replace("_", " ").replace("@", " at tau "))
        ax.set_xticks(x)
        ax.set_xticklabels([r["group"].split(" ")[0] if key == "by_frequency_decile"
                            else r["group"] for r in rows], rotation=45, ha="right", fontsize=7)
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, summary["k"])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("latent steps per token")
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)
