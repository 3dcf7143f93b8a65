"""Every soft-mask attention backend equals the explicit-bias reference (forward and backward)."""

import zlib

import pytest
import torch

from megatron_ponder.attention import ATTENTION_BACKENDS, backend_available, get_attention_backend

CUDA = torch.cuda.is_available()
NEEDS_CUDA = pytest.mark.skipif(not CUDA, reason="flex backward and CUDA kernels need a GPU")
DEVICES = ["cpu", pytest.param("cuda", marks=NEEDS_CUDA)]

# fp32 tolerances: outputs max-abs error; gradients max-abs error relative to the reference's max-abs
# (measured on CPU: outputs <= 1e-6, gradients <= 5e-7 relative).
OUT_ATOL = {"cpu": 1e-5, "cuda": 1e-4}
GRAD_RTOL = {"cpu": 1e-5, "cuda": 1e-4}

# (B, Hq, Hkv, S, D): MHA, GQA 2:1 and 4:1, S from 1 to past a 128-block boundary, D 16 and 64.
SHAPES = [
    (1, 4, 4, 1, 16),
    (2, 4, 2, 5, 16),
    (2, 4, 1, 64, 64),
    (1, 4, 4, 130, 64),
    (2, 4, 2, 130, 16),
    (2, 6, 3, 64, 16),  # a head count that is not a power of two (a TP rank's local share)
]


def _seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode())


def make_inputs(b, hq, hkv, s, d, *, bias, seed, device="cpu", dtype=torch.float32):
    """q [B,Hq,S,D], k/v [B,Hkv,S,D]; key_log_w [B,S] in [-8,0], 0 on token slots, some -1e4; or None."""
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(b, h, s, d, generator=g) for h in (hq, hkv, hkv))
    lw = None
    if bias:
        lw = -8 * torch.rand(b, s, generator=g)
        lw[:, torch.rand(s, generator=g) < 0.1] = -1e4  # pruned-to-zero latent slots
        lw[:, ::3] = 0.0  # token slots (K = 2 layout): position 0 always has weight 1
    to = lambda t: None if t is None else t.to(device=device, dtype=dtype).requires_grad_()
    return to(q), to(k), to(v), to(lw)


def run(name, q, k, v, lw, scale, grad_out=None):
    """Output and (if grad_out) gradients of q, k, v, key_log_w."""
    out = get_attention_backend(name)(q, k, v, lw, scale=scale)
    if grad_out is None:
        return out, None
    inputs = [t for t in (q, k, v, lw) if t is not None]
    return out, torch.autograd.grad(out, inputs, grad_out)


def max_abs(a, b):
    return (a.double() - b.double()).abs().max().item()


def rel_err(a, b):
    """Max-abs error over the reference's max-abs. Gradients here are O(1); the floor of 1 keeps an
    exactly-zero reference gradient (S = 1: softmax over one key) from dividing by zero."""
    return max_abs(a, b) / max(b.double().abs().max().item(), 1.0)


def assert_matches_reference(name, shape, bias, device, *, backward=True):
    b, hq, hkv, s, d = shape
    q, k, v, lw = make_inputs(*shape, bias=bias, seed=_seed(name, shape, bias), device=device)
    scale = d ** -0.5
    g = torch.randn(b, hq, s, d, generator=torch.Generator().manual_seed(1)).to(device) if backward else None
    ref_out, ref_grads = run("reference", q, k, v, lw, scale, g)
    if backward:
        out, grads = run(name, q, k, v, lw, scale, g)
    else:
        with torch.no_grad():
            out, grads = run(name, q, k, v, lw, scale)
    assert out.shape == ref_out.shape and out.dtype == q.dtype
    err = max_abs(out, ref_out)
    assert err <= OUT_ATOL[device], f"{name} forward max-abs error {err:.2e} > {OUT_ATOL[device]}"
    for label, gr, gr_ref in zip("qkvw", grads or (), ref_grads or ()):
        assert torch.isfinite(gr).all(), f"{name} grad {label} not finite"
        e = rel_err(gr, gr_ref)
        assert e <= GRAD_RTOL[device], f"{name} grad {label} relative error {e:.2e} > {GRAD_RTOL[device]}"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("bias", [True, False], ids=["soft", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_augmented_matches_reference(shape, bias, device):
    assert_matches_reference("augmented", shape, bias, device)


@pytest.mark.parametrize("bias", [True, False], ids=["soft", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_flex_forward_matches_reference_on_cpu(shape, bias):
    # CPU flex runs its eager (unfused) forward; training needs CUDA.
    assert_matches_reference("flex", shape, bias, "cpu", backward=False)


@NEEDS_CUDA
@pytest.mark.parametrize("bias", [True, False], ids=["soft", "none"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_flex_matches_reference_on_cuda(shape, bias):
    assert_matches_reference("flex", shape, bias, "cuda")


def hard_mask_oracle(q, k, v, keep, scale):
    """Float64 causal attention over only the kept keys: keep [B,S] bool. Independent of every backend."""
    hq, hkv = q.shape[1], k.shape[1]
    k, v = (t.double().repeat_interleave(hq // hkv, dim=1) for t in (k, v))
    s = q.shape[2]
    scores = scale * q.double() @ k.transpose(-1, -2)
    allowed = torch.ones(s, s, dtype=torch.bool).tril()[None, None] & keep[:, None, None, :]
    return scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ v


@pytest.mark.parametrize("name", ATTENTION_BACKENDS)
@pytest.mark.parametrize("shape", [(2, 4, 2, 5, 16), (2, 4, 1, 130, 64)], ids=str)
def test_minus_inf_equals_removed_keys(name, shape):
    q, k, v, lw = make_inputs(*shape, bias=True, seed=_seed("hard", shape))
    keep = torch.rand(lw.shape, generator=torch.Generator().manual_seed(2)) < 0.6
    keep[:, ::3] = True  # token slots always kept, so no query row is empty
    hard = torch.where(keep, 0.0, float("-inf"))
    scale = shape[-1] ** -0.5
    with torch.no_grad():
        out = get_attention_backend(name)(q, k, v, hard, scale=scale)
    err = max_abs(out, hard_mask_oracle(q, k, v, keep, scale))
    assert err <= 1e-5, f"{name} hard-mask forward max-abs error {err:.2e} > 1e-5"


def test_augmented_minus_inf_backward_is_finite_and_matches_floor():
    # -inf is clamped to a finite floor so the fused backward has no 0 * -inf = NaN.
    shape = (2, 4, 2, 64, 16)
    q, k, v, lw = make_inputs(*shape, bias=True, seed=_seed("inf-bwd"))
    with torch.no_grad():
        lw[:, 1::3] = float("-inf")
    g = torch.randn(2, 4, 64, 16, generator=torch.Generator().manual_seed(3))
    _, grads = run("augmented", q, k, v, lw, 0.25, g)
    _, ref_grads = run("reference", q, k, v, lw.detach().clamp_min(-1e4).requires_grad_(), 0.25, g)
    for label, gr, gr_ref in zip("qkvw", grads, ref_grads):
        assert torch.isfinite(gr).all(), f"grad {label} not finite"
        assert rel_err(gr, gr_ref) <= 1e-5, f"grad {label} relative error {rel_err(gr, gr_ref):.2e} > 1e-5"
    assert grads[3][:, 1::3].abs().max().item() == 0.0  # removed keys get no gradient


@pytest.mark.parametrize("name", ["reference", "augmented"])
def test_head_split_like_tensor_parallel(name):
    # Two "ranks" with half the q and kv heads each give the full output; the bias gradient is partial
    # per rank and sums to the full one (the caller all-reduces it over the TP group).
    q, k, v, lw = make_inputs(2, 8, 4, 40, 16, bias=True, seed=_seed("tp", name))
    g = torch.randn(2, 8, 40, 16, generator=torch.Generator().manual_seed(4))
    full = get_attention_backend(name)(q, k, v, lw, scale=0.25)
    (gw_full,) = torch.autograd.grad(full, lw, g)
    halves, gw_sum = [], torch.zeros_like(lw)
    for r in range(2):
        qs, ks, vs = q[:, 4 * r:4 * r + 4], k[:, 2 * r:2 * r + 2], v[:, 2 * r:2 * r + 2]
        out = get_attention_backend(name)(qs, ks, vs, lw, scale=0.25)
        gw_sum += torch.autograd.grad(out, lw, g[:, 4 * r:4 * r + 4])[0]
        halves.append(out)
    assert max_abs(torch.cat(halves, 1), full) <= 1e-6
    assert rel_err(gw_sum, gw_full) <= 1e-5


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("name", ATTENTION_BACKENDS)
def test_half_precision_close_to_fp32_reference(name, dtype):
    # D 128 with -1e4 keys: in fp16, -1e4 / scale would overflow k~, hence augmented's dtype-aware floor.
    q, k, v, lw = make_inputs(2, 4, 2, 64, 128, bias=True, seed=_seed("half", name, str(dtype)))
    g = torch.randn(2, 4, 64, 128, generator=torch.Generator().manual_seed(5))
    ref, ref_grads = run("reference", q, k, v, lw, 128 ** -0.5, g)
    half = [t.detach().to(dtype).requires_grad_(name != "flex") for t in (q, k, v)]
    lw = lw.detach().requires_grad_(name != "flex")
    out, grads = run(name, *half, lw, 128 ** -0.5, None if name == "flex" else g.to(dtype))
    assert out.dtype == dtype
    assert max_abs(out, ref) <= 3e-2, f"{name} {dtype} max-abs error {max_abs(out, ref):.2e} > 3e-2"
    for label, gr, gr_ref in zip("qkvw", grads or (), ref_grads):
        e = rel_err(gr.float(), gr_ref)
        assert e <= 3e-2, f"{name} {dtype} grad {label} relative error {e:.2e} > 3e-2"


def test_unknown_backend_names_field_and_valid_values():
    with pytest.raises(ValueError) as info:
        get_attention_backend("sparse")
    msg = str(info.value)
    assert "ponder.attention_backend" in msg and "'sparse'" in msg
    assert all(repr(n) in msg for n in ATTENTION_BACKENDS)
    with pytest.raises(ValueError, match="ponder.attention_backend"):
        backend_available("sparse")


def test_backend_available():
    assert backend_available("reference") == (True, "")
    assert backend_available("augmented") == (True, "")
    ok, reason = backend_available("flex")
    assert ok == CUDA
    assert ok or "CUDA" in reason


def test_flex_cpu_backward_refused_clearly():
    q, k, v, lw = make_inputs(1, 2, 2, 8, 16, bias=True, seed=0)
    with pytest.raises(NotImplementedError, match="ponder.attention_backend='flex' needs CUDA"):
        get_attention_backend("flex")(q, k, v, lw, scale=0.25)
