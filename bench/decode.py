"""Decode speed of a trained tiny PonderLM-3 at several taus against PonderLM-2 (same K) and
vanilla of the same size: tokens/s and KV-cache entries per token, on CPU or (--device) GPU.

Model: the README demo's checkpoint (`python -m megatron_ponder.demo` trains it; H 128,
2 layers, K 2), or with --recipe a freshly initialised model of a recipe's shape and random
prompt ids (speed only: its zero-initialised router keeps a share of the latent steps that
depends on tau alone). PonderLM-2 and vanilla reuse its decoder weights (speed does not
depend on them). Greedy decoding of --new-tokens tokens after a prompt; only the token-by-token
phase is timed. Models are interleaved round by round and each keeps its fastest round:
on a shared machine other jobs only ever add time, so the minimum is the least disturbed. Target (issue 5): wall-clock saving >= 0.8x the FLOPs saving against
PonderLM-2, judged at the taus that save >= 5% of the FLOPs.
Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from megatron_ponder.config import config_from_dict, config_to_dict, load_config  # noqa: E402
from megatron_ponder.data.tokenizer import Tokenizer  # noqa: E402
from megatron_ponder.inference.decoding import SlotDecoder  # noqa: E402
from megatron_ponder.inference.kv_cache import SlotKVCache  # noqa: E402
from megatron_ponder.inference.model_loading import load_model  # noqa: E402
from megatron_ponder.model import build_model  # noqa: E402
from megatron_ponder.parallel import initialize_parallel  # noqa: E402
from megatron_ponder.ponder.flops import DecoderShape  # noqa: E402
from megatron_ponder.ponder.registry import method_class, names_where  # noqa: E402

PROMPT = ("The tutorial introduces the reader informally to the basic concepts and features of "
          "the language and system. It helps to have an interpreter handy")


def sibling(model, cfg, method: str):
    """Same decoder, another method: the checkpoint's weights minus the router."""
    data = config_to_dict(cfg)
    data["ponder"]["method"] = method
    other = build_model(config_from_dict(data)).eval()
    state = {k: v for k, v in model.state_dict().items() if "router" not in k}
    other.load_state_dict(state, strict=False)
    return other


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def decode_once(model, prompt: list[int], new_tokens: int, tau: float, batch: int):
    """(seconds of the token-by-token phase, latent steps per decoded token, cache slots)."""
    device = next(model.parameters()).device
    engine = SlotDecoder(model, tau)
    cache = SlotKVCache(batch, (len(prompt) + new_tokens) * engine.slots_per_token, device)
    logits = []
    for row in range(batch):
        row_logits, _ = engine.prefill(cache, row, torch.tensor(prompt, device=device))
        logits.append(row_logits)
    logits = torch.stack(logits)
    rows = torch.arange(batch, device=device)
    steps = []
    _sync(device)
    start = time.perf_counter()
    for i in range(new_tokens):
        token = logits.argmax(-1)
        logits, kept = engine.feed(cache, rows, token,
                                   torch.full((batch,), len(prompt) + i, device=device))
        steps.append(kept)
    _sync(device)
    elapsed = time.perf_counter() - start
    return elapsed, torch.stack(steps, dim=1), cache


def random_model(recipe: str, overrides: list[str]):
    """(PonderLM-3 of a recipe's shape with its seeded initialisation, in eval mode, its Config)."""
    cfg = load_config(recipe, overrides)
    if not method_class(cfg.ponder.method).uses_router:
        routed = ", ".join(names_where(lambda method: method.uses_router))
        sys.exit(f"{recipe}: ponder.method={cfg.ponder.method!r}; the decode bench needs a "
                 f"routed method ({routed})")
    initialize_parallel(cfg)
    return build_model(cfg).eval(), cfg


def decode_flops(shape, method, prompt_steps, decode_steps) -> float:
    """Mean FLOPs of the decoded tokens only: the per-token cost depends only on the prefix,
    so (whole sequence total) - (prompt total) is exactly the decoded tokens' total."""
    full = torch.cat([prompt_steps, decode_steps], dim=1)
    n_prompt, n_full = prompt_steps.shape[1], full.shape[1]
    total = method.inference_flops_per_token(shape, n_full, full) * n_full
    total -= method.inference_flops_per_token(shape, n_prompt, prompt_steps) * n_prompt
    return total / (n_full - n_prompt)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default=str(ROOT / "runs" / "demo" / "ponderlm3"))
    parser.add_argument("--taus", type=float, nargs="+", default=[1e-4, 0.1, 0.3])
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--recipe", default=None, help="a recipe: random weights of its shape "
                        "instead of --checkpoint (ponder.method must be ponderlm3)")
    parser.add_argument("--overrides", nargs="*", default=[], help="dotted overrides of --recipe")
    parser.add_argument("--prompt-tokens", type=int, default=32, help="random prompt length "
                        "with --recipe")
    args = parser.parse_args()
    torch.set_num_threads(1)
    device = torch.device(args.device)
    if args.recipe:
        ponder, cfg = random_model(args.recipe, args.overrides)
        gen = torch.Generator().manual_seed(0)
        prompt = torch.randint(0, cfg.model.vocab_size, (args.prompt_tokens,), generator=gen).tolist()
    else:
        if not Path(args.checkpoint).exists():
            sys.exit(f"no checkpoint at {args.checkpoint}: train the demo first "
                     f"(python -m megatron_ponder.demo) or pass --checkpoint or --recipe")
        ponder, cfg = load_model(args.checkpoint, device="cpu")
        tokenizer = Tokenizer.load(cfg.data.tokenizer, cfg.data.eod_token)
        prompt = [tokenizer.eod_id] + tokenizer.encode(PROMPT)
    models = {"vanilla": sibling(ponder, cfg, "vanilla").to(device),
              "ponderlm2": sibling(ponder, cfg, "ponderlm2").to(device)}
    ponder = ponder.to(device)
    tau = ponder.method.tau  # the checkpoint's (the fixed-step methods ignore it)
    runs = [("vanilla", models["vanilla"], tau), ("ponderlm2", models["ponderlm2"], tau)]
    runs += [(f"ponderlm3@tau={t:g}", ponder, t) for t in args.taus]
    shape = DecoderShape.of(cfg.model)
    adaptive = {name for name, model, _ in runs if model.method.uses_router}
    times = {name: [] for name, _, _ in runs}
    results = {}
    with torch.no_grad():
        for name, model, tau in runs:  # warm-up
            decode_once(model, prompt, 4, tau, args.batch)
        for _ in range(args.rounds):
            for name, model, tau in runs:
                seconds, steps, cache = decode_once(model, prompt, args.new_tokens, tau, args.batch)
                times[name].append(seconds)
                if name not in results:
                    engine = SlotDecoder(model, tau)
                    scratch = SlotKVCache(1, len(prompt) * engine.slots_per_token, device)
                    _, prompt_steps = engine.prefill(scratch, 0, torch.tensor(prompt, device=device))
                    steps, prompt_steps = steps.cpu(), prompt_steps.cpu()
                    processed = len(prompt) + args.new_tokens
                    results[name] = {
                        "tau": tau if name in adaptive else None,
                        "executed_steps": steps.float().mean().item(),
                        "kv_entries_per_token": cache.lengths.float().mean().item() / processed,
                        "decode_flops_per_token": decode_flops(
                            shape, model.method, prompt_steps[None].expand(args.batch, -1), steps),
                    }
    base = results["ponderlm2"]
    for name, row in results.items():
        seconds = min(times[name])
        row["tokens_per_s"] = args.batch * args.new_tokens / seconds
        row["flops_saving"] = 1 - row["decode_flops_per_token"] / base["decode_flops_per_token"]
        row["wallclock_saving"] = 1 - seconds / min(times["ponderlm2"])
    print(f"{'model':>20} {'tokens/s':>9} {'steps':>6} {'KV/token':>9} {'FLOPs/token':>12} "
          f"{'FLOPs saving':>13} {'time saving':>12}")
    for name, r in results.items():
        print(f"{name:>20} {r['tokens_per_s']:>9.1f} {r['executed_steps']:>6.2f} "
              f"{r['kv_entries_per_token']:>9.2f} {r['decode_flops_per_token']:>12.4g} "
              f"{r['flops_saving']:>12.1%} {r['wallclock_saving']:>11.1%}")
    judged = [r for n, r in results.items() if n in adaptive and r["flops_saving"] >= 0.05]
    headline = max((r for n, r in results.items() if n in adaptive),
                   key=lambda r: r["flops_saving"])
    print(json.dumps({
        "bench": "decode", "checkpoint": None if args.recipe else args.checkpoint,
        "recipe": args.recipe, "device": args.device, "k": ponder.method.k, "batch": args.batch,
        "new_tokens": args.new_tokens, "rounds": args.rounds, "models": results,
        "flops_saving": headline["flops_saving"], "wallclock_saving": headline["wallclock_saving"],
        "at_tau": headline["tau"],
        "target_met": bool(judged) and all(r["wallclock_saving"] >= 0.8 * r["flops_saving"] for r in judged),
    }))


if __name__ == "__main__":
    main()
