#!/usr/bin/env python3
"""Export a trainer checkpoint (any parallel layout) to a Hugging Face folder.

Example:
    python tools/export_hf.py runs/demo exports/demo-hf
    python -c "from transformers import AutoModelForCausalLM as A; \\
        m = A.from_pretrained('exports/demo-hf', trust_remote_code=True, ponder_tau=1e-3)"

PonderLM-3/PonderLM-2/Pause load with trust_remote_code (modeling_ponder.py ships in the
folder; tau = ponder_tau and K_max = ponder_max_steps can be overridden at load); a vanilla
export is the stock class: LlamaForCausalLM, Qwen2ForCausalLM (QKV biases) or
Qwen3ForCausalLM (q/k norms), with the model's RoPE scaling and head_dim. The tokenizer is
the run's sentencepiece model, with </s> (the end-of-document token every training document
ends with) as BOS and EOS.
--flops-budget R (instead of --tau): ponder_tau is calibrated on validation sequences of the
checkpoint's data to spend R of the inference FLOPs of the same model with every latent step
kept; config.json records the budget and the calibration as ponder_flops_budget.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    sys.path.insert(0, str(REPO))  # the argument helpers below need no torch
    # defer: the package until REPO is on sys.path (these helpers import no torch)
    from megatron_ponder.inference.budget_args import add_budget_arguments
    from megatron_ponder.inference.checkpoint_args import add_allow_unverified

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("checkpoint", help="step directory, checkpoints/ directory or run directory")
    add_allow_unverified(parser)
    parser.add_argument("output", help="folder to write (refused if it exists, unless --force "
                        "and it is a previous export; never a run or checkpoint)")
    parser.add_argument("--tokenizer", default="", help="sentencepiece .model or Hugging Face "
                        "tokenizer folder (default: data.tokenizer of the checkpoint's config)")
    knob = parser.add_mutually_exclusive_group()
    knob.add_argument("--tau", type=float, default=None,
                      help="ponder_tau written into the config (default: the checkpoint's)")
    add_budget_arguments(parser, knob, what="ponder_tau")
    parser.add_argument("--force", action="store_true", help="replace a previous export")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.export.hf_export import export_hf
    from megatron_ponder.inference.budget import calibrate_on_validation
    from megatron_ponder.inference.model_loading import load_model
    from megatron_ponder.ponder.registry import method_class
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT
    from megatron_ponder.run.layout import check_export_output

    overrides = [] if args.tau is None else [f"ponder.tau={args.tau}"]
    try:
        check_export_output(args.output, args.force)  # before the load: fail fast
        model, cfg = load_model(args.checkpoint, overrides, device="cpu",
                                allow_unverified=args.allow_unverified)
        extra = {}
        if args.flops_budget is not None:
            calibration = calibrate_on_validation(model, cfg, args.flops_budget,
                                                  args.calibration_samples)
            print(calibration.describe())
            cfg.ponder.tau = calibration.tau
            extra["ponder_flops_budget"] = calibration.as_dict()
        out = export_hf(model, cfg, args.tokenizer or cfg.data.tokenizer, args.output, args.force,
                        extra_config=extra)
    except (ConfigError, CheckpointError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    plain = method_class(cfg.ponder.method).plain
    written = json.loads((Path(out) / "config.json").read_text())["architectures"][0]
    kind = written if plain else f"{written} (trust_remote_code)"
    print(f"exported {cfg.ponder.method} (K={cfg.ponder.k}, tau={cfg.ponder.tau}) to {out} as {kind}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
