"""megatron-ponder: PonderLM-3 (adaptive latent pondering) pretraining on megatron-core."""

__version__ = "0.1.0"
