"""`make demo`: train a tiny PonderLM-3 for a few dozen steps and print its loss.

Until the data pipeline lands the tokens are made up in-process: each sequence walks a
fixed random permutation of the vocabulary from a random start, so a model that learns the
permutation drives the loss from chance (log V) towards 0.
"""

from __future__ import annotations

import math
import time
import warnings

warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|full scope).*")

import torch  # noqa: E402

from megatron_ponder.config import config_from_dict  # noqa: E402
from megatron_ponder.model import build_model  # noqa: E402
from megatron_ponder.parallel import destroy_parallel, initialize_parallel  # noqa: E402

DEMO = {
    "model": {"vocab_size": 64, "hidden_size": 64, "num_layers": 2, "num_attention_heads": 4,
              "max_position_embeddings": 64},
    "ponder": {"method": "ponderlm3", "k": 2},
    "seed": 1234,
}


def permutation_walks(step: int, batch: int, length: int, vocab: int) -> torch.Tensor:
    successor = torch.randperm(vocab, generator=torch.Generator().manual_seed(0))
    tokens = [torch.randint(0, vocab, (batch,), generator=torch.Generator().manual_seed(step))]
    for _ in range(length):
        tokens.append(successor[tokens[-1]])
    return torch.stack(tokens, dim=1)


def main(steps: int = 40, batch: int = 8, length: int = 32) -> None:
    cfg = config_from_dict(DEMO)
    initialize_parallel(cfg)
    model = build_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1)
    print(f"PonderLM-3 demo: K={cfg.ponder.k}, {sum(p.numel() for p in model.parameters()):,} "
          f"parameters, {steps} steps on synthetic permutation walks (chance loss {math.log(64):.2f})")
    start = time.time()
    for step in range(steps):
        tokens = permutation_walks(step, batch, length, cfg.model.vocab_size)
        out = model(tokens[:, :-1], step=step)
        loss, _ = model.loss(out, tokens[:, 1:])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if step % 5 == 0 or step == steps - 1:
            stats = model.statistics(out)
            print(f"step {step:3d}  loss {loss.item():.3f}  J {model.jacobi_for_step(step)}  "
                  f"expected steps {stats['expected_steps']:.2f}  "
                  f"router entropy {stats['router_entropy']:.3f}  ({time.time() - start:.1f}s)")
    destroy_parallel()


if __name__ == "__main__":
    main()
