"""Cheaper PonderLM-3 training (issue 14): ponder.grad_passes 2 and ponder.latent_init copy
against the default, on the CPU sweep's configuration (recipes/sweeps/pareto-cpu.yaml, h64
PonderLM-3 K 3, lambda 0.01, one micro-batch of 16 x 64 tokens, J = 3).

Per variant: training FLOPs of the step (the passes read off the model, backward only
through the passes that keep gradients), the bytes autograd saves for the backward (unique
storages seen by saved_tensors_hooks: exact and independent of machine load), and the median
wall time of --repeats forward+backward steps (load-dependent: say the load when quoting
it). Perplexity and the peak RSS of whole trainings come from the sweep's records.
Last stdout line: one JSON object.

    .venv/bin/python bench/cheap_training.py                 # the sweep's h64 run
    .venv/bin/python bench/cheap_training.py --size h96 --repeats 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from megatron_ponder.config import config_from_dict, config_to_dict  # noqa: E402
from megatron_ponder.model import build_model  # noqa: E402
from megatron_ponder.parallel import initialize_parallel  # noqa: E402
from megatron_ponder.ponder.flops import DecoderShape  # noqa: E402
from megatron_ponder.sweeps.spec import load_sweep  # noqa: E402

VARIANTS = {"default": {}, "grad_passes 2": {"grad_passes": 2},
            "latent_init copy": {"latent_init": "copy"}}


def saved_bytes(model, tokens, labels) -> tuple[int, float]:
    """(bytes of the unique storages autograd saved, seconds) for one forward+backward."""
    storages: dict[int, int] = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    start = time.perf_counter()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss, _ = model.loss(model(tokens, jacobi=3), labels)
    loss.backward()
    elapsed = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return sum(storages.values()), elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", default=str(ROOT / "recipes/sweeps/pareto-cpu.yaml"))
    parser.add_argument("--size", default="h64")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    runs = {r.run_id: r for r in load_sweep(args.sweep).runs}
    base = config_to_dict(runs[f"{args.size}-ponderlm3-k3-lam0.01-seed1"].config)
    results = {}
    for name, ponder in VARIANTS.items():
        data = json.loads(json.dumps(base))
        data["ponder"].update(ponder)
        cfg = config_from_dict(data)
        initialize_parallel(cfg)
        model = build_model(cfg).train()
        gen = torch.Generator().manual_seed(0)
        batch, length = cfg.train.micro_batch_size, cfg.data.seq_length
        tokens = torch.randint(0, cfg.model.vocab_size, (batch, length + 1), generator=gen)
        tokens, labels = tokens[:, :-1], tokens[:, 1:]
        passes = model(tokens[:1, :2], jacobi=3).pass_slots
        flops = batch * model.method.training_flops(DecoderShape.of(cfg.model), passes, length)
        measured = [saved_bytes(model, tokens, labels) for _ in range(args.repeats)]
        results[name] = {"passes": passes, "training_flops_per_step": flops,
                         "saved_mib": measured[0][0] / 2**20,
                         "step_s_median": statistics.median(t for _, t in measured)}
        print(f"{name:>17}: passes {passes}, {flops:.3e} FLOPs/step, "
              f"{results[name]['saved_mib']:.1f} MiB saved for backward, "
              f"{results[name]['step_s_median']:.2f} s/step", flush=True)
    default = results["default"]
    for name, r in results.items():
        r["flops_vs_default"] = r["training_flops_per_step"] / default["training_flops_per_step"]
        r["saved_vs_default"] = r["saved_mib"] / default["saved_mib"]
    print(json.dumps({"size": args.size, "variants": results}))


if __name__ == "__main__":
    main()
