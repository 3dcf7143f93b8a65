"""Forward+backward time and peak memory of the soft-mask attention backends vs plain causal SDPA.

    python bench/attention.py                       # CPU fp32, S 1024/2048/4096, B 2, 8 heads, D 64
    python bench/attention.py --device cuda --dtype bfloat16 --seq-lens 2048,8192 --head-dim 128 \\
        --backends plain,augmented,flex

Memory: each (backend, S) in a fresh subprocess, what the attention itself needs: on CPU the peak
RSS increase over the RSS just before one fwd+bwd (peak reset via /proc/self/clear_refs, else
getrusage maxrss); on CUDA max_memory_allocated over memory_allocated before. By default q, k, v and
key_log_w are leaves that require grad (their gradients count, the same for every backend);
`--inputs intermediate` makes q, k, v inside the step instead, as RoPE outputs are in a model.
Time: per S one fresh subprocess runs the O(S)-memory backends interleaved round by round (warm-up
first; robust to this shared machine's slow phases), another times `reference`; median over rounds.
A readable table goes to stdout as results arrive; the LAST stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RATIO_S = 2048  # the sequence length the headline ratios are reported at


# ----------------------------------------------------------------------------- worker (one run)

def _make_step(cfg: dict, seq: int):
    """Build inputs and return step() doing one fwd+bwd of cfg['backend'] at length seq."""
    # defer: torch, only in a worker process (the parent only starts them)
    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(REPO))
    # defer: the package until REPO is on sys.path
    from megatron_ponder.attention import get_attention_backend

    dev, dtype = torch.device(cfg["device"]), getattr(torch, cfg["dtype"])
    b, hq, hkv, d = cfg["batch"], cfg["heads"], cfg["kv_heads"], cfg["head_dim"]
    g = torch.Generator().manual_seed(0)
    leaf = lambda *shape: torch.randn(*shape, generator=g).to(dev, dtype).requires_grad_()
    q, k, v = leaf(b, hq, seq, d), leaf(b, hkv, seq, d), leaf(b, hkv, seq, d)
    grad_out = torch.randn(b, hq, seq, d, generator=g).to(dev, dtype)
    log_w = (-8 * torch.rand(b, seq, generator=g)).to(dev).requires_grad_()  # router output: fp32
    scale = d ** -0.5
    if cfg["backend"] == "plain":
        attn = lambda q, k, v, _: F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=scale,
                                                                  enable_gqa=hq != hkv)
    else:
        attn = functools.partial(get_attention_backend(cfg["backend"]), scale=scale)

    def fn():
        if cfg["inputs"] == "intermediate":  # like RoPE outputs in a model: freed unless attention saves them
            return attn(q * 1.0, k * 1.0, v * 1.0, log_w)
        return attn(q, k, v, log_w)

    def step():
        fn().backward(grad_out)
        for t in (q, k, v, log_w):
            t.grad = None
        if dev.type == "cuda":
            torch.cuda.synchronize()

    return step


def measure_memory(cfg: dict) -> float:
    """MiB that one fwd+bwd of cfg['backend'] at cfg['seq'] needs on top of its inputs."""
    # defer: torch, only in a worker process (the parent only starts them)
    import torch

    if cfg["device"].startswith("cuda"):
        step = _make_step(cfg, cfg["seq"])
        for _ in range(max(cfg["warmup"], 1)):  # flex compiles here
            step()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        return (torch.cuda.max_memory_allocated() - before) / 2**20
    _make_step(cfg, min(cfg["seq"], 128))()  # init thread pools and kernels at a negligible size
    # defer: the package, only in a worker process (the parent only starts them)
    from megatron_ponder.memory.measure import peak_rss_bytes, reset_peak_rss, rss_bytes

    step = _make_step(cfg, cfg["seq"])
    # First full-size step: the allocator holds no freed memory yet that it could reuse unseen.
    reset_ok = reset_peak_rss()
    before = rss_bytes()
    step()
    return max(peak_rss_bytes(reset_ok) - before, 0) / 2**20


def measure_times(cfg: dict) -> dict:
    """Per-backend fwd+bwd seconds at cfg['seq'], backends interleaved round by round.

    Interleaving in one process makes ratios robust to the machine's slow phases (a shared host:
    measured 2x swings between consecutive runs of the same kernel).
    """
    steps = {name: _make_step(dict(cfg, backend=name), cfg["seq"]) for name in cfg["backends"]}
    for step in steps.values():
        for _ in range(cfg["warmup"]):
            step()
    times = {name: [] for name in steps}
    names = list(steps)
    for r in range(cfg["repeats"]):
        for name in names[r % len(names):] + names[:r % len(names)]:  # rotate the order each round
            t0 = time.perf_counter()
            steps[name]()  # synchronises on CUDA
            times[name].append(time.perf_counter() - t0)
    return times


# ----------------------------------------------------------------------------- driver

def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--seq-lens", default="1024,2048,4096")
    p.add_argument("--head-dim", type=int, default=64)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=None, help="default: --heads (MHA)")
    p.add_argument("--backends", default=None,
                   help="comma list of plain,reference,augmented,flex (default: all; flex only if available)")
    p.add_argument("--inputs", default="leaf", choices=["leaf", "intermediate"],
                   help="leaf: q/k/v exist before the step (default); intermediate: made inside it, as in a model")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="timing rounds (backends interleaved per round)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: JSON config of one measurement
    return p.parse_args()


def _backends(arg: str | None, device: str) -> list[str]:
    sys.path.insert(0, str(REPO))
    # defer: the package until REPO is on sys.path
    from megatron_ponder.attention import backend_available

    names = arg.split(",") if arg else ["plain", "reference", "augmented", "flex"]
    keep = []
    for n in names:
        ok, why = (True, "") if n == "plain" else backend_available(n)
        if n == "flex" and not device.startswith("cuda"):
            ok, why = False, "flex backward needs CUDA"
        if ok:
            keep.append(n)
        else:
            print(f"skipping {n}: {why}", file=sys.stderr)
    return keep


def _ratio(res: dict, a: str, b: str, key: str, seq: int):
    try:
        return res[a][str(seq)][key] / res[b][str(seq)][key]
    except (KeyError, ZeroDivisionError):
        return None


def _paired_ratio(res: dict, a: str, b: str, seq: int):
    """Median over rounds of a's time / b's time in the same round (robust to slow phases)."""
    try:
        ta, tb = res[a][str(seq)]["times_s"], res[b][str(seq)]["times_s"]
    except KeyError:
        return None
    return statistics.median(x / y for x, y in zip(ta, tb))


def _worker(cfg: dict):
    """Run one measurement in a fresh interpreter; its last stdout line is JSON (None on failure)."""
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(cfg)], capture_output=True, text=True)
    if proc.returncode:
        print(f"worker {cfg.get('backend', cfg.get('backends'))} S={cfg['seq']} failed:\n{proc.stderr[-2000:]}",
              file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    args = _parse()
    if args.worker:
        cfg = json.loads(args.worker)
        print(json.dumps(measure_times(cfg) if cfg["mode"] == "time" else measure_memory(cfg)))
        return
    seqs = [int(s) for s in args.seq_lens.split(",")]
    base = dict(device=args.device, dtype=args.dtype, batch=args.batch, heads=args.heads,
                kv_heads=args.kv_heads or args.heads, head_dim=args.head_dim, inputs=args.inputs,
                warmup=args.warmup, repeats=args.repeats)
    names = _backends(args.backends, args.device)
    print(f"# {base}")
    print(f"{'backend':>10} {'S':>6} {'median ms':>10} {'min ms':>8} {'peak MiB':>9}", flush=True)
    results: dict = {}
    for seq in seqs:
        # The O(S^2) reference is timed in its own process: its GiB-sized allocations and frees slowed
        # whichever backend ran right after it when interleaved.
        times = {}
        for group in ([n for n in names if n != "reference"], [n for n in names if n == "reference"]):
            if group:
                print(f"timing {group} at S={seq} ({args.repeats} rounds) ...", file=sys.stderr, flush=True)
                times.update(_worker(dict(base, mode="time", backends=group, seq=seq)) or {})
        for name in names:
            print(f"memory {name} S={seq} ...", file=sys.stderr, flush=True)
            mem = _worker(dict(base, mode="memory", backend=name, seq=seq))
            t = times.get(name)
            if t is None or mem is None:
                continue
            results.setdefault(name, {})[str(seq)] = dict(time_s=statistics.median(t), times_s=t, mem_mb=mem)
            print(f"{name:>10} {seq:>6} {1e3 * statistics.median(t):>10.1f} {1e3 * min(t):>8.1f} {mem:>9.1f}",
                  flush=True)
    summary = dict(base, seq_lens=seqs, results=results, ratio_seq=RATIO_S,
                   augmented_over_plain=_ratio(results, "augmented", "plain", "time_s", RATIO_S),
                   reference_over_augmented=_ratio(results, "reference", "augmented", "time_s", RATIO_S),
                   augmented_mem_over_plain=_ratio(results, "augmented", "plain", "mem_mb", RATIO_S),
                   flex_over_plain=_ratio(results, "flex", "plain", "time_s", RATIO_S),
                   flex_mem_over_plain=_ratio(results, "flex", "plain", "mem_mb", RATIO_S),
                   augmented_over_plain_paired=_paired_ratio(results, "augmented", "plain", RATIO_S))
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
