"""PonderLM: the shared decoder plus the method switch, the model a trainer holds."""

from __future__ import annotations

import torch
from megatron.core.transformer.module import MegatronModule

from megatron_ponder.config import Config, check_sequence_length
from megatron_ponder.model.decoder import PonderDecoder
from megatron_ponder.model.init import initialize_parameters
from megatron_ponder.model.transformer_config import to_transformer_config
from megatron_ponder.ponder import PassProgram, PonderOutput, get_method, run_locally


class PonderLM(MegatronModule):
    def __init__(self, cfg: Config, params_dtype: torch.dtype = torch.float32,
                 fused_kernels: bool = False):
        config = to_transformer_config(cfg, params_dtype, fused_kernels)
        super().__init__(config=config)
        self.cfg = cfg
        self.method = get_method(cfg.ponder)  # configured: K, J, tau, ...
        self.decoder = PonderDecoder(cfg, config, fused_kernels)
        initialize_parameters(self, cfg)

    # megatron-core's finalize_model_grads (pipeline parallelism) looks up the chunk holding
    # `pre_process` and sums the grads of the word embedding shared with the output layer
    # over the first and last stage when `share_embeddings_and_output_weights` (GPTModel's
    # names). PonderLM's LM head is untied (decoder.py): no weight lives on two stages, so
    # there is nothing to sum.
    share_embeddings_and_output_weights = False

    @property
    def pre_process(self) -> bool:
        """This pipeline stage holds the embedding (megatron's name)."""
        return self.decoder.is_first_stage

    @property
    def post_process(self) -> bool:
        """This pipeline stage holds the final norm and LM head (megatron's name)."""
        return self.decoder.is_last_stage

    def jacobi_for_step(self, step: int) -> int:
        if self.training:
            return self.method.jacobi_for_step(self.cfg.seed, step)
        return self.method.jacobi_eval

    def program(self, tokens: torch.Tensor, step: int = 0, jacobi: int | None = None,
                tau: float | None = None, backbone=None) -> PassProgram:
        """The method's pass program on tokens [B, L]. J comes from (seed, step) in training
        and from ponder.jacobi_eval in eval, unless given. tau: run PonderLM-3's hard
        pruning rule (inference) at this threshold instead of the soft mask. backbone: the
        decoder, or a wrapper of it (prefill records the keys and values of each pass)."""
        check_sequence_length(tokens.shape[1], self.cfg.model)
        return self.method.program(
            self.decoder if backbone is None else backbone, tokens,
            jacobi=self.jacobi_for_step(step) if jacobi is None else jacobi, tau=tau)

    def forward(self, tokens: torch.Tensor, step: int = 0, jacobi: int | None = None,
                tau: float | None = None) -> PonderOutput:
        """tokens [B, L] -> PonderOutput (logits [L, B, V_local]), whole stack in this process
        (pipeline parallelism runs `program` through megatron_ponder.parallel.pipeline)."""
        return run_locally(self.program(tokens, step, jacobi, tau))

    def loss(self, output: PonderOutput, labels: torch.Tensor, loss_mask=None):
        return self.method.loss(self.decoder, output, labels, loss_mask)

    def statistics(self, output: PonderOutput, loss_mask=None) -> dict[str, float]:
        """Pondering statistics over the positions loss_mask counts (those of the penalty)."""
        return self.method.statistics(output, loss_mask)
