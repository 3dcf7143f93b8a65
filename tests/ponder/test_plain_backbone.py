"""The method without megatron (architecture.md): every method's pass program on a
plain-PyTorch backbone (plain_backbone.py), and PonderLM-3's reductions on it, router
one-hot(K) = PonderLM-2 and one-hot(0) = vanilla, soft and hard."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from plain_backbone import PlainBackbone
from megatron_ponder.ponder import METHODS, method_forward, ponder_loss
from megatron_ponder.ponder.registry import method_class

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
K, J, B, L = 2, 2, 2, 6
SCHEDULES = {  # slots per token of each pass at K 2, J 2 (growth m = 1, then J + 1 full)
    "vanilla": [1], "ponderlm1": [1, 1, 1], "ponderlm2": [1, 2, 3, 3, 3],
    "loop": [1, 1, 1], "pause": [3], "ponderlm3": [1, 2, 3, 3, 3],
}
TOL = 2e-5  # float32 max abs on logits: the same sums in another order
FORCE = 1e4  # exp(-1e4) is exactly 0 in float32


def tokens(seed=1):
    return torch.randint(0, 48, (B, L), generator=torch.Generator().manual_seed(seed))


def forward(method, backbone, **options):
    return method_forward(method_class(method)(k=K), backbone, tokens(), jacobi=J, **options)


@pytest.mark.parametrize("name", METHODS)
def test_every_method_runs_its_pass_program(name):
    backbone = PlainBackbone(k=K)
    out = forward(name, backbone)
    assert out.pass_slots == SCHEDULES[name]
    assert out.logits.shape == (L, B, 48) and out.logits.isfinite().all()
    method = method_class(name)
    assert (out.log_w is not None) == method.uses_router
    loss, _ = ponder_loss(backbone, out, tokens(seed=2))
    loss.backward()
    # The method's own parameters are used exactly when the method says it has them.
    assert (backbone.router.net.weight.grad is not None) == method.uses_router
    assert (backbone.pause.grad is not None) == method.uses_pause
    assert backbone.head.weight.grad.abs().sum() > 0


def force_router(backbone, step):
    with torch.no_grad():
        backbone.router.net.weight.zero_()
        backbone.router.net.bias.fill_(-FORCE)
        backbone.router.net.bias[step] = 0.0


@pytest.mark.parametrize("tau", [None, 1e-4])
@torch.no_grad()
def test_router_one_hot_k_is_ponderlm2_and_one_hot_zero_is_vanilla(tau):
    backbone = PlainBackbone(k=K).eval()
    force_router(backbone, K)
    ponder = forward("ponderlm3", backbone, tau=tau).logits
    assert (ponder - forward("ponderlm2", backbone).logits).abs().max().item() < TOL
    force_router(backbone, 0)
    out = forward("ponderlm3", backbone, tau=tau)
    assert out.pass_slots == SCHEDULES["ponderlm3"]  # the latent passes really ran
    assert (out.logits - forward("vanilla", backbone).logits).abs().max().item() < TOL
    # Not trivially equal: a uniform router moves the logits away from both.
    backbone.router.net.bias.zero_()
    uniform = forward("ponderlm3", backbone, tau=tau).logits
    assert (uniform - ponder).abs().max().item() > 1e-3


CHILD = f"""
import sys
sys.path.insert(0, {str(HERE)!r})
import torch
from plain_backbone import PlainBackbone
from megatron_ponder.ponder import METHODS, method_class, method_forward, ponder_loss
backbone = PlainBackbone()
tokens = torch.randint(0, 48, (2, 5))
for name in METHODS:
    out = method_forward(method_class(name)(k=2), backbone, tokens, jacobi=2)
    ponder_loss(backbone, out, tokens)[0].backward()
print(len(METHODS), sorted(m for m in sys.modules if m.split(".")[0] == "megatron"))
"""


def test_the_method_runs_without_importing_megatron():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["6", "[]"]
