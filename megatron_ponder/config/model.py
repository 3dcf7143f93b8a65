"""model: the decoder every method shares, and the checks of its sizes and RoPE scaling."""

from __future__ import annotations

import math
from dataclasses import dataclass

from megatron_ponder.config.checks import require

@dataclass(frozen=True)
class RopeScaling:
    """What one model.rope_scaling type reads, and the order its fields must keep."""
    fields: tuple[str, ...]
    larger_than: tuple[tuple[str, str], ...] = ()  # (field, must exceed field)


# RoPE frequency scalings the decoder implements (model/rope.py), as Hugging Face names them.
ROPE_SCALINGS = {
    "linear": RopeScaling(("rope_scaling_factor",)),
    "llama3": RopeScaling(("rope_scaling_factor", "rope_low_freq_factor",
                           "rope_high_freq_factor", "rope_original_max_positions"),
                          (("rope_high_freq_factor", "rope_low_freq_factor"),)),
    "yarn": RopeScaling(("rope_scaling_factor", "rope_original_max_positions", "rope_beta_fast",
                         "rope_beta_slow", "rope_attention_factor"),
                        (("rope_beta_fast", "rope_beta_slow"),)),
}
_PLAIN_ROPE = RopeScaling(())
_ROPE_FIELDS = ("rope_scaling_factor", "rope_low_freq_factor", "rope_high_freq_factor",
                "rope_original_max_positions", "rope_beta_fast", "rope_beta_slow",
                "rope_attention_factor")


@dataclass
class ModelConfig:
    """The decoder shared by every method (same parameters for honest comparisons)."""

    vocab_size: int = 256
    hidden_size: int = 64
    num_layers: int = 2
    num_attention_heads: int = 4
    # Grouped-query attention: number of key/value heads; None means one per query head.
    num_query_groups: int | None = None
    # None -> the LLaMA SwiGLU size: 8/3 H rounded up to a multiple of 64.
    ffn_hidden_size: int | None = None
    # Length of the RoPE position table: the longest sequence (in tokens, not slots).
    max_position_embeddings: int = 256
    rotary_base: float = 10000.0
    norm_eps: float = 1e-5
    # None -> PonderLM-2's sqrt(2 / (5 H)).
    init_std: float | None = None
    # Biases on the query, key and value projections (Qwen2); no other linear has one.
    qkv_bias: bool = False
    # Token embeddings are multiplied by this; None -> PonderLM-2's sqrt(2.5 H). Imported
    # Llama-family checkpoints use 1.0, their own (docs/decisions.md, "Bring your own model").
    embedding_scale: float | None = None
    # Size of one attention head (megatron's kv_channels); None -> hidden_size / heads.
    # Qwen3 and Mistral-Nemo set it apart from the hidden size.
    head_dim: int | None = None
    # RMSNorm over each query and key head before RoPE (Qwen3; megatron's qk_layernorm).
    qk_norm: bool = False
    # RoPE frequency scaling (model/rope.py): None (plain RoPE), "linear" (every frequency
    # divided by rope_scaling_factor), "llama3" (Llama 3.1's wavelength-dependent scaling,
    # which also reads the three fields below) or "yarn" (YaRN: factor, original context and
    # the three yarn fields). A field the scaling does not read stays null.
    rope_scaling: str | None = None
    rope_scaling_factor: float | None = None
    rope_low_freq_factor: float | None = None
    rope_high_freq_factor: float | None = None
    # The context the unscaled model was trained on (Hugging Face's
    # original_max_position_embeddings): wavelengths are compared against it.
    rope_original_max_positions: int | None = None
    # "yarn" (with factor and original context): the rotation counts bounding its ramp from
    # interpolated to kept frequencies, and the factor on cos and sin (the attention logits
    # scale by its square).
    rope_beta_fast: float | None = None
    rope_beta_slow: float | None = None
    rope_attention_factor: float | None = None

    @property
    def head_size(self) -> int:
        if self.head_dim is not None:
            return self.head_dim
        return self.hidden_size // self.num_attention_heads

    @property
    def ffn_size(self) -> int:
        if self.ffn_hidden_size is not None:
            return self.ffn_hidden_size
        return 64 * math.ceil(8 * self.hidden_size / 3 / 64)

    @property
    def kv_heads(self) -> int:
        return self.num_query_groups or self.num_attention_heads

    @property
    def std(self) -> float:
        return self.init_std if self.init_std is not None else math.sqrt(2 / (5 * self.hidden_size))

    @property
    def embed_scale(self) -> float:
        if self.embedding_scale is not None:
            return self.embedding_scale
        return math.sqrt(2.5 * self.hidden_size)

    def validate(self) -> None:
        """The decoder's own sizes and constants; its split over the parallel ranks is
        checked by ParallelConfig.validate."""
        self._validate_shape()
        self._validate_constants()
        self._validate_rope_scaling()

    def _validate_shape(self) -> None:
        for name in ("vocab_size", "hidden_size", "num_layers", "num_attention_heads",
                     "max_position_embeddings"):
            require(getattr(self, name) >= 1, f"model.{name}", getattr(self, name), "must be >= 1")
        if self.head_dim is None:
            require(self.hidden_size % self.num_attention_heads == 0, "model.hidden_size",
                    self.hidden_size, f"must be divisible by model.num_attention_heads="
                    f"{self.num_attention_heads} (or set model.head_dim)")
        else:  # RoPE rotates pairs of a head's channels
            require(self.head_dim >= 2 and self.head_dim % 2 == 0, "model.head_dim", self.head_dim,
                    "must be an even number >= 2, or null (hidden_size / num_attention_heads)")
        require(self.num_attention_heads % self.kv_heads == 0, "model.num_query_groups",
                self.num_query_groups,
                f"must divide model.num_attention_heads={self.num_attention_heads}")
        require(self.ffn_size >= 1, "model.ffn_hidden_size", self.ffn_hidden_size,
                "must be >= 1 or null")

    def _validate_constants(self) -> None:
        require(self.std > 0, "model.init_std", self.init_std, "must be > 0 or null")
        require(self.norm_eps > 0, "model.norm_eps", self.norm_eps, "must be > 0")
        require(self.rotary_base > 1, "model.rotary_base", self.rotary_base, "must be > 1")
        require(self.embed_scale > 0, "model.embedding_scale", self.embedding_scale,
                "must be > 0 or null")

    def _validate_rope_scaling(self) -> None:
        """A scaling names its type and exactly the fields it reads; a field without the type
        that reads it would silently do nothing, so it is refused."""
        require(self.rope_scaling is None or self.rope_scaling in ROPE_SCALINGS,
                "model.rope_scaling", self.rope_scaling,
                f"valid values: null (plain RoPE), {', '.join(ROPE_SCALINGS)}")
        scaling = ROPE_SCALINGS.get(self.rope_scaling, _PLAIN_ROPE)
        used = scaling.fields
        for name in _ROPE_FIELDS:
            value = getattr(self, name)
            if name not in used:
                require(value is None, f"model.{name}", value,
                        f"must be null with model.rope_scaling={self.rope_scaling!r} (it reads "
                        f"{', '.join('model.' + u for u in used) or 'no scaling field'})")
            else:
                require(value is not None and value > 0, f"model.{name}", value,
                        f"must be > 0 with model.rope_scaling={self.rope_scaling!r}")
        for larger, smaller in scaling.larger_than:
            require(getattr(self, larger) > getattr(self, smaller), f"model.{larger}",
                    getattr(self, larger), f"must exceed model.{smaller}={getattr(self, smaller)}")


def check_sequence_length(seq_len: int, model: ModelConfig) -> None:
    """Tokens beyond the RoPE table have no position: refuse them before any compute."""
    require(seq_len <= model.max_position_embeddings, "sequence length", seq_len,
            f"must be <= model.max_position_embeddings={model.max_position_embeddings}")
