#!/usr/bin/env python3
"""Convert checkpoints: reshard a trainer checkpoint to another tensor x pipeline-parallel
layout, or import a Hugging Face folder (a stock Llama-family model, or our own export) into
a trainer run directory.

Examples:
    python tools/convert_checkpoint.py reshard runs/a runs/a_tp2pp2 --tensor-parallel 2 \
        --pipeline-parallel 2
    python tools/convert_checkpoint.py import-hf /models/llama runs/llama_ponder \
        --recipe recipes/continue_cpu.yaml --method ponderlm3 --k 3 train.steps=1000
    python tools/convert_checkpoint.py import-hf exports/demo-hf runs/from_hf
    python tools/convert_checkpoint.py add-manifest runs/old/checkpoints/step_0001000

reshard loads model and optimizer state through megatron dist_checkpointing at the target
layout (TP x PP processes, started with torchrun automatically) and saves them there, with
the run's data position and schedule. The data-parallel size and the engine (megatron or
DeepSpeed ZeRO 1-3) need no conversion: every engine stores the same per-parameter state,
and any data-parallel size loads it.

import-hf with --recipe reads a LlamaForCausalLM (Llama 2/3.x, SmolLM2), MistralForCausalLM
(full attention), Qwen2ForCausalLM or Qwen3ForCausalLM folder (safetensors, one file or
sharded; plain, linear, llama3 or yarn RoPE; any head_dim): the architecture from its
config.json, everything else from the recipe; what the decoder cannot represent is refused
naming the field. It writes OUTPUT/config.yaml and a checkpoint at data position --step with
a fresh optimizer state; parameters the method adds (PonderLM-3's router: zero) start as in
pretraining. Without --recipe it imports a folder written by tools/export_hf.py exactly
(vanilla embeddings within one float32 rounding where the export folded sqrt(2.5 H) in).
Train the result with: python -m megatron_ponder.train OUTPUT/config.yaml

add-manifest writes manifest.json (the checksums every reader verifies) into a step directory
that has none, for a checkpoint you vouch for (saved before manifests existed): it must load
as a checkpoint (its common state reads); its files are hashed as they are now.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RELAUNCHED = "PONDER_CONVERT_CHECKPOINT_CHILD"  # set by relaunch() for the processes it starts


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])
    sub = parser.add_subparsers(dest="command", required=True)
    reshard = sub.add_parser("reshard", help="trainer checkpoint -> another TP x PP layout")
    reshard.add_argument("input", help="step directory, checkpoints/ directory or run directory")
    reshard.add_argument("output", help="run directory to write (must not hold a run)")
    reshard.add_argument("--tensor-parallel", type=int, required=True)
    reshard.add_argument("--pipeline-parallel", type=int, default=1)
    sys.path.insert(0, str(REPO))  # the argument helper needs no torch
    # defer: the package until REPO is on sys.path (this helper imports no torch)
    from megatron_ponder.inference.checkpoint_args import add_allow_unverified

    add_allow_unverified(reshard)
    manifest = sub.add_parser("add-manifest", help="write manifest.json for a checkpoint you "
                              "vouch for (one saved before manifests existed)")
    manifest.add_argument("step_dir", help="a step_NNNNNNN directory without manifest.json")
    imp = sub.add_parser("import-hf", help="Hugging Face folder -> trainer checkpoint")
    imp.add_argument("input", help="a stock Llama / Mistral / Qwen2 / Qwen3 folder (with "
                     "--recipe), or a folder written by tools/export_hf.py (exact, without "
                     "--recipe)")
    imp.add_argument("output", help="run directory to write (must not hold a run)")
    imp.add_argument("overrides", nargs="*", help="recipe overrides section.key=value")
    imp.add_argument("--recipe", help="recipe for everything but the architecture, which comes "
                     "from the folder's config.json")
    imp.add_argument("--method", help="ponder.method of the run (default: the recipe's)")
    imp.add_argument("--k", type=int, help="ponder.k of the run (default: the recipe's)")
    imp.add_argument("--step", type=int, default=0, help="data position the run resumes at")
    # Overrides may follow the options (argparse alone would take them only before).
    args, rest = parser.parse_known_args(argv)
    if rest and (args.command != "import-hf" or any(a.startswith("-") or "=" not in a for a in rest)):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if rest:
        args.overrides = [*args.overrides, *rest]
    return args


def _layout(args) -> dict:
    return {"tensor_model_parallel_size": args.tensor_parallel,
            "pipeline_model_parallel_size": args.pipeline_parallel}


def _target(args):
    """(source step directory, its config at the target layout); a layout the model does not
    divide into (heads, vocabulary, layers) is a ConfigError naming the field."""
    # defer: torch and megatron (seconds), only for the subcommand that needs them
    from megatron_ponder.config import ConfigError
    from megatron_ponder.run.checkpoint_read import checkpoint_config, resolve_checkpoint
    from megatron_ponder.run.layout import STEP_DIR

    source = resolve_checkpoint(args.input)
    if not STEP_DIR.match(source.name):
        raise ConfigError(f"{source} is not named step_NNNNNNN: reshard reads a checkpoint in "
                          "its run's layout; pass the run directory, its checkpoints/ "
                          "directory or a step_NNNNNNN directory inside it")
    return source, checkpoint_config(source, [f"parallel.{k}={v}" for k, v in _layout(args).items()],
                                     args.allow_unverified)


def reshard(args) -> None:
    # defer: torch and megatron (seconds), only for the subcommand that needs them
    from megatron_ponder.config import ConfigError
    from megatron_ponder.model import build_model
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.run.checkpoint_write import Checkpointer
    from megatron_ponder.run.layout import STEP_DIR
    from megatron_ponder.training.engines import build_engine
    from megatron_ponder.training.optim import build_scheduler

    source, cfg = _target(args)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world != _processes(args):
        raise ConfigError(f"--tensor-parallel {args.tensor_parallel} x --pipeline-parallel "
                          f"{args.pipeline_parallel} needs {_processes(args)} processes, this is "
                          f"one of {world}")
    initialize_parallel(cfg)
    model = build_model(cfg)
    engine = build_engine(cfg, model)
    scheduler = build_scheduler(engine.optimizer, cfg.train)
    step = int(STEP_DIR.match(source.name).group(1))
    common = Checkpointer(source.parent, keep=1, allow_unverified=args.allow_unverified).load(
        step, engine, scheduler, hint=f"this source checkpoint is incomplete: reshard another step of "
        f"{source.parent}")
    config = dict(common["config"])
    config["parallel"] = {**config.get("parallel", {}), **_layout(args)}
    Checkpointer(Path(args.output) / "checkpoints", keep=cfg.train.keep_checkpoints).save(
        step, engine, scheduler, common["train_state"], config)


def add_manifest(args) -> None:
    """manifest.json for a step directory that has none, once its common state reads: the
    user vouches for the data, this only records it as it is now (atomically)."""
    # defer: torch and megatron (seconds), only for the subcommand that needs them
    from megatron_ponder.run import manifest as checkpoint_manifest
    from megatron_ponder.run.checkpoint_read import CheckpointError, read_common

    step = Path(args.step_dir)
    if not (step / "metadata.json").is_file():
        raise CheckpointError(f"{step} is not a checkpoint: expected a step_NNNNNNN directory "
                              "holding metadata.json")
    if (step / checkpoint_manifest.MANIFEST).exists():
        raise CheckpointError(f"{step} already has {checkpoint_manifest.MANIFEST}: nothing to "
                              "do (a checkpoint that fails it is damaged; its manifest is not "
                              "rewritten over the damage)")
    read_common(step, allow_unverified=True)  # a checkpoint at all: its common.pt unpickles
    try:
        checkpoint_manifest.write_manifest(step)
    except OSError as err:  # a read-only copy, a full disk: no temporary is left behind
        with contextlib.suppress(OSError):
            (step / (checkpoint_manifest.MANIFEST + ".tmp")).unlink(missing_ok=True)
        raise CheckpointError(f"cannot write {step / checkpoint_manifest.MANIFEST}: "
                              f"{err.strerror or err}") from None
    print(f"wrote {step / checkpoint_manifest.MANIFEST}")


def _stock_checkpoint(args):
    """(run config, its parameters, notes) of a stock Llama/Mistral/Qwen2/Qwen3 folder."""
    # defer: torch and megatron (seconds), only for the subcommand that needs them
    from megatron_ponder.export.hf_folder import read_config, read_weights
    from megatron_ponder.export.hf_import import stock_config, stock_state, tied_embeddings

    folder = Path(args.input)
    hf = read_config(folder)
    cfg, notes = stock_config(hf, folder, args.recipe, args.output, args.method, args.k,
                              args.overrides)
    return cfg, stock_state(read_weights(folder), cfg, tied_embeddings(hf)), notes


def import_hf(args) -> Path:
    # defer: torch and megatron (seconds), only for the subcommand that needs them
    from megatron_ponder.config import ConfigError, ParallelConfig, config_to_dict
    from megatron_ponder.export.hf_export import read_hf_export
    from megatron_ponder.model import build_model
    from megatron_ponder.model.tp_shards import load_full_state
    from megatron_ponder.parallel import initialize_parallel
    from megatron_ponder.training.initial_checkpoint import save_training_checkpoint

    if args.recipe is None:
        if args.method is not None or args.k is not None or args.overrides:
            raise ConfigError("--method, --k and recipe overrides need --recipe RECIPE")
        cfg, state = read_hf_export(args.input)
        notes = []
    else:
        cfg, state, notes = _stock_checkpoint(args)
    # Built and saved by this one process (TP 1); the run loads it at its recipe's layout.
    single = dataclasses.replace(cfg, parallel=ParallelConfig())
    initialize_parallel(single)
    model = build_model(single)
    full = {name: param.detach().clone() for name, param in model.named_parameters()}
    added = sorted(set(full) - set(state))
    if set(state) - set(full) or (args.recipe is None and added):
        raise ConfigError(f"{args.input}: the weights do not fit the config (missing "
                          f"{added[:3]}, unexpected {sorted(set(state) - set(full))[:3]})")
    load_full_state(model, {**full, **state})
    path = save_training_checkpoint(model, single, Path(args.output) / "checkpoints", args.step)
    if args.recipe is not None:
        (Path(args.output) / "config.yaml").write_text(
            yaml.safe_dump(config_to_dict(cfg), sort_keys=False))
        for note in notes:
            print(f"note: {note}")
        print(f"imported as {cfg.ponder.method} (K={cfg.ponder.k}); parameters the method adds, "
              f"initialised as in pretraining: {', '.join(added) or 'none'}")
        print(f"continue with: python -m megatron_ponder.train {args.output}/config.yaml")
    return path


def _processes(args) -> int:
    """One process per target rank: the data-parallel size of the conversion is 1."""
    return args.tensor_parallel * args.pipeline_parallel


def relaunch(args, argv: list[str]) -> int:
    """One process per target rank under torchrun (gloo on CPU, nccl on GPU). torchrun
    reports any failing child as 1, so each child records its own code (2: bad input, such
    as a checkpoint that does not load) for this process to pass on."""
    # defer: the package until convert() put REPO on sys.path
    from megatron_ponder.run.exit_codes import ENV_DIR, EXIT_BAD_INPUT, EXIT_DONE, read_exit_codes

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc-per-node={_processes(args)}", str(Path(__file__).resolve()), *argv]
    with tempfile.TemporaryDirectory(prefix="reshard-exit-codes-") as codes:
        rc = subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": "1", ENV_DIR: codes,
                                          RELAUNCHED: "1"}).returncode
        children = {r["exit_code"] for r in read_exit_codes(codes).values()}
    return EXIT_BAD_INPUT if rc != EXIT_DONE and EXIT_BAD_INPUT in children else rc


def main(argv: list[str] | None = None) -> int:
    code = convert(argv)
    if os.environ.get(RELAUNCHED):
        # defer: the package until convert() put REPO on sys.path
        from megatron_ponder.run.exit_codes import record_exit_code

        record_exit_code(code)  # read by relaunch(), which started this process
    return code


def convert(argv: list[str] | None) -> int:
    args = parse_args(argv)
    argv = sys.argv[1:] if argv is None else argv
    warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine).*")
    sys.path.insert(0, str(REPO))
    # defer: torch and megatron (seconds), only after parsing: --help stays fast
    from megatron_ponder.config import ConfigError
    from megatron_ponder.run.checkpoint_read import CheckpointError
    from megatron_ponder.run.exit_codes import EXIT_BAD_INPUT
    from megatron_ponder.run.layout import check_output_dir

    try:
        if args.command == "add-manifest":
            add_manifest(args)
            return 0
        if int(os.environ.get("RANK", "0")) == 0:  # a later rank would see rank 0's output
            check_output_dir(args.output, "output")
        if args.command == "reshard" and _processes(args) > 1 and "WORLD_SIZE" not in os.environ:
            _target(args)  # bad input: exit 2 here, before any process starts
            return relaunch(args, argv)
        if args.command == "reshard":
            reshard(args)
        else:
            import_hf(args)
    except (ConfigError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"wrote {args.output}/checkpoints")
    return 0


if __name__ == "__main__":
    sys.exit(main())
