"""Soft-mask causal attention backends (plain PyTorch; no megatron import).

Importing the package registers the built-in backends: reference, augmented, flex.
"""

from .registry import ATTENTION_BACKENDS, backend_available, get_attention_backend, register_backend
# Importing the backend modules registers them.
from .augmented import augmented_attention
from .flex import flex_soft_mask_attention
from .reference import reference_attention

__all__ = [
    "ATTENTION_BACKENDS",
    "augmented_attention",
    "backend_available",
    "flex_soft_mask_attention",
    "get_attention_backend",
    "reference_attention",
    "register_backend",
]
