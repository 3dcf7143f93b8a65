"""Sequence parallelism's TP gradient reduction covers exactly the norms inside the stack.

Those norms see only a rank's share of the sequence, so their weight gradients are partial
sums over the TP ranks (Transformer Engine marks such weights `sequence_parallel`, and both the
trainer's `allreduce_tensor_parallel_partial_grads` and megatron's `finalize_model_grads` sum every
marked weight over the TP group). The final norm runs after the gather on the whole sequence:
marked, its complete gradient would be summed TP times. Sequence parallelism itself needs CUDA
and Transformer Engine; here the decoder is only built (no forward), with a norm that marks its
weight from the config it is given exactly as TE's RMSNorm does.
"""

import torch

from factories import tiny_config
from megatron_ponder.model import decoder as decoder_module
from megatron_ponder.model.spec import ponder_layer_spec
from megatron_ponder.model.transformer_config import to_transformer_config
from megatron_ponder.parallel import initialize_parallel
from megatron_ponder.parallel.grads import sequence_parallel_params


class MarkedRMSNorm(torch.nn.RMSNorm):
    """torch's RMSNorm with TE's marking: te.pytorch.RMSNorm(sequence_parallel=...) sets the
    attribute `sequence_parallel` on its weight (megatron's TENorm passes config.sequence_parallel)."""

    def __init__(self, config, hidden_size, eps=1e-5):
        super().__init__(hidden_size, eps=eps)
        self.weight.sequence_parallel = config.sequence_parallel


def marked_spec(attention_backend, sequence_parallel=False, *rest, **options):
    # The torch norms refuse sequence parallelism: build without it, then mark as TE would.
    spec = ponder_layer_spec(attention_backend, False, *rest, **options)
    spec.submodules.input_layernorm = spec.submodules.pre_mlp_layernorm = MarkedRMSNorm
    return spec


def test_final_norm_is_not_reduced_over_tensor_parallel_ranks(monkeypatch):
    cfg = tiny_config("ponderlm3", 2)
    initialize_parallel(cfg)  # one process: the construction is what is checked
    cfg.parallel.tensor_model_parallel_size, cfg.parallel.sequence_parallel = 2, True
    monkeypatch.setattr(decoder_module, "ponder_layer_spec", marked_spec)
    decoder = decoder_module.PonderDecoder(cfg, to_transformer_config(cfg))

    assert decoder.final_layernorm.weight.sequence_parallel is False
    marked = {id(p) for p in sequence_parallel_params(decoder)}
    in_stack = {name for name, p in decoder.named_parameters() if id(p) in marked}
    assert in_stack == {f"decoder.layers.{i}.{norm}.weight" for i in range(2)
                        for norm in ("input_layernorm", "pre_mlp_layernorm")}
