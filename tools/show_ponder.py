#!/usr/bin/env python3
"""Render a text with each token coloured by the pondering steps PonderLM-3 gave it.

Example:
    python tools/show_ponder.py runs/demo --text "The river flows past the old mill." \\
        --output runs/demo/ponder   # writes ponder.html and ponder.png

The steps are the hard rule's K_hat_t = max{k : w_{t,k} >= tau} from the parallel
hard-masked forward (the same decisions token-by-token decoding takes).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="step directory, checkpoints/ directory or run directory")
    sys.path.insert(0, str(REPO))  # the argument helper needs no torch
    # defer: the package until REPO is on sys.path (this helper imports no torch)
    from megatron_ponder.inference.checkpoint_args import add_allow_unverified

    add_allow_unverified(parser)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--text", help="the text to render")
    source.add_argument("--text-file", help="a UTF-8 file with the text")
    parser.add_argument("--output", required=True, help="PATH: writes PATH.html and PATH.png")
    parser.add_argument("--tokenizer", default="", help="sentencepiece .model or Hugging "
                        "Face tokenizer folder (default: the checkpoint's data.tokenizer)")
    parser.add_argument("--tau", type=float, default=None, help="default: the checkpoint's ponder.tau")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    import torch

    from megatron_ponder.config import ConfigError
    from megatron_ponder.data.tokenizer import Tokenizer, check_fits
    from megatron_ponder.inference.decoding import check_prompts
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.inference.ponder_view import render_html, render_png
    from megatron_ponder.inference.scoring import configured, hard_forward
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT
    from megatron_ponder.run.layout import check_output_file, write_atomically

    out = Path(args.output)
    try:
        for suffix in (".html", ".png"):
            check_output_file(out.with_name(out.name + suffix), "--output")
        text = args.text if args.text is not None else Path(args.text_file).read_text(encoding="utf-8")
        model, cfg = load_model(args.checkpoint, allow_unverified=args.allow_unverified)
        if not model.method.uses_router:
            raise ConfigError(f"ponder.method={cfg.ponder.method!r} gives every token the same "
                              f"steps; show_ponder needs a checkpoint of a method with a router "
                              f"(ponderlm3)")
        method = configured(model, args.tau)  # --tau checked here, once
        tokenizer = Tokenizer.load(args.tokenizer or cfg.data.tokenizer, cfg.data.eod_token)
        check_fits(tokenizer, cfg.model.vocab_size)
        ids = [tokenizer.eod_id] + tokenizer.encode(text)
        check_prompts([ids], 0, cfg)
        device = next(model.parameters()).device
        steps = hard_forward(model, torch.tensor([ids], device=device), method=method)
        steps = steps.kept_steps(method.tau)
    except (ConfigError, CheckpointError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    pieces = [tokenizer.decode(ids[: i + 1])[len(tokenizer.decode(ids[:i])):] for i in range(1, len(ids))]
    steps = steps[0, 1:].tolist()
    k = method.latent_steps
    title = f"{Path(args.checkpoint).name}: tau={method.tau:g}, K={k}"
    out.parent.mkdir(parents=True, exist_ok=True)
    html_path, png_path = out.with_name(out.name + ".html"), out.with_name(out.name + ".png")
    write_atomically(html_path, render_html(pieces, steps, k, title))
    render_png(pieces, steps, k, title, png_path)
    print(f"wrote {html_path} and {png_path} ({len(steps)} tokens, mean {sum(steps) / len(steps):.2f} steps)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
