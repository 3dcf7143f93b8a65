"""A text with each token coloured by the latent steps the hard rule gave it: HTML and PNG."""

from __future__ import annotations

import html
from pathlib import Path

COLORMAP = "YlOrRd"


def _colors(steps: list[int], k: int) -> list[tuple[float, float, float, float]]:
    from matplotlib import colormaps  # defer: matplotlib, only when rendering

    cmap = colormaps[COLORMAP]
    return [cmap(0.1 + 0.8 * s / max(k, 1)) for s in steps]


def _hex(rgba) -> str:
    return "#" + "".join(f"{int(round(255 * c)):02x}" for c in rgba[:3])


def render_html(pieces: list[str], steps: list[int], k: int, title: str) -> str:
    colors = _colors(steps, k)
    spans = "".join(
        f'<span title="{s} step{"s" if s != 1 else ""}" style="background:{_hex(c)}">'
        f'{html.escape(p).replace(chr(10), "&#8629;<br>")}</span>'
        for p, s, c in zip(pieces, steps, colors))
    legend = " ".join(f'<span style="background:{_hex(c)};padding:0 .6em">{s}</span>'
                      for s, c in zip(range(k + 1), _colors(list(range(k + 1)), k)))
    mean = sum(steps) / max(len(steps), 1)
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}"
            ".text{font-family:monospace;white-space:pre-wrap;line-height:1.8}</style></head><body>"
            f"<h3>{html.escape(title)}</h3><p>latent steps per token: {legend} "
            f"(mean {mean:.2f} of K={k})</p><div class='text'>{spans}</div></body></html>\n")


def render_png(pieces: list[str], steps: list[int], k: int, title: str, path: Path,
               width_chars: int = 80) -> None:
    import matplotlib  # defer: matplotlib, only when rendering

    matplotlib.use("Agg")  # before pyplot's import: no display backend
    # defer: matplotlib, only when rendering
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import BoundaryNorm

    lines, line, used = [], [], 0
    for piece, color in zip(pieces, _colors(steps, k)):
        for i, part in enumerate(piece.split("\n")):
            if i > 0:  # a newline inside the token: show it and break the line
                line.append(("\u21b5", color))
                lines.append(line)
                line, used = [], 0
            if part:
                if used + len(part) > width_chars and line:
                    lines.append(line)
                    line, used = [], 0
                line.append((part, color))
                used += len(part)
    lines.append(line)
    char_w, line_h = 0.0105, 0.06
    fig_h = 1.2 + 0.32 * len(lines)
    fig, ax = plt.subplots(figsize=(width_chars * 0.11 + 1.5, fig_h))
    ax.set_axis_off()
    ax.set_xlim(0, 1)
    ax.set_ylim(-len(lines) * line_h - 0.02, 0.02)
    for row, parts in enumerate(lines):
        x = 0.0
        for text, color in parts:
            ax.text(x, -row * line_h, text, family="monospace", fontsize=10, va="top",
                    bbox={"facecolor": color, "edgecolor": "none", "pad": 1.5})
            x += len(text) * char_w
    norm = BoundaryNorm([s - 0.5 for s in range(k + 2)], 256)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=plt.get_cmap(COLORMAP)), ax=ax,
                       orientation="horizontal", fraction=0.05, pad=0.02, ticks=list(range(k + 1)))
    bar.set_label("latent steps per token")
    ax.set_title(title, fontsize=10)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
