"""train.compile (model/compile.py, applied by model/transforms.py): compiled decoder layers train like eager ones, and one
compilation serves every pass length and Jacobi count.

One test, so that the compilation (inductor: 170 s of CPU time on the shared 2-core machine,
most of this test's cost) is paid once: a PonderLM-3 step already runs both graph kinds
(pass 0 without the soft-mask bias, the growth and Jacobi passes of every length with it);
every other method reuses them, and recomputation adds only the recomputed layer's two.
"""

import copy

import torch
from torch._dynamo.utils import counters

from factories import tiny_config
from megatron_ponder.ponder.registry import METHODS, method_class

STEPS = 10
# float32; inductor fuses and reorders the elementwise work of a layer. Measured on this
# machine: at most 9e-7 relative over 10 AdamW steps (PonderLM-3: bitwise equal).
LOSS_RTOL = 1e-5


def train(model, steps=STEPS) -> list[float]:
    """AdamW steps on fixed random batches; J is drawn from (seed, step) as in training."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    losses = []
    for step in range(steps):
        batch = torch.randint(0, 64, (2, 17), generator=generator)
        loss, _ = model.loss(model(batch[:, :-1], step=step), batch[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def test_compiled_layers_train_like_eager_every_method_without_recompiling(build):
    torch._dynamo.reset()
    counters.clear()
    cfg = tiny_config("ponderlm3", k=2)
    assert len(set(cfg.ponder.jacobi_train)) > 1  # the 10 steps draw both Jacobi counts
    # The router method first (its draws are checked above), then every other method.
    for method in sorted(METHODS, key=lambda name: not method_class(name).uses_router):
        check_against_eager(build, tiny_config(method, k=2), method, graphs=2)
    # Activation recomputation: a recomputed layer's forward (checkpoint inside) is its own
    # compiled function, two more graphs (measured); recomputing the passes re-runs the
    # compiled layers under a checkpoint around the stack: no new graph.
    for recompute, graphs in (("layers", 4), ("passes", 4)):
        check_against_eager(build, tiny_config("ponderlm3", 2, [f"train.recompute={recompute}"]),
                            recompute, graphs)


def check_against_eager(build, cfg, case, graphs):
    eager = train(build(cfg).train())
    compiled_cfg = copy.deepcopy(cfg)
    compiled_cfg.train.compile = True  # applied after recomputation (model/transforms.py)
    compiled = train(build(compiled_cfg).train())
    worst = max(abs(a - b) / abs(a) for a, b in zip(eager, compiled))
    assert worst <= LOSS_RTOL, (case, eager, compiled)
    # Graphs in all so far (without and with the bias): no recompilation for another pass
    # length (L .. (K+1) L), Jacobi count, layer, method or model instance.
    assert counters["stats"]["unique_graphs"] == graphs, (case, dict(counters["stats"]))
    assert not counters["graph_break"], dict(counters["graph_break"])
