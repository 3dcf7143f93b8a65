"""Hugging Face RoPE settings <-> the model's rotary fields, both directions in one place.

config.json carries them as `rope_scaling` (transformers 4: the scaling, with `rope_theta`
beside it) or `rope_parameters` (transformers 5: both). The decoder implements plain RoPE and
the `linear` and `llama3` scalings (model/rope.py); every other type is refused with why.
"""

from __future__ import annotations

from megatron_ponder.config import ConfigError, ModelConfig

_DEFAULT_ROPE_THETA = 10000.0  # transformers' default where config.json leaves it out
# rope type -> {Hugging Face key: model field} of the keys that type reads.
_FIELDS = {
    "linear": {"factor": "rope_scaling_factor"},
    "llama3": {"factor": "rope_scaling_factor", "low_freq_factor": "rope_low_freq_factor",
               "high_freq_factor": "rope_high_freq_factor",
               "original_max_position_embeddings": "rope_original_max_positions"},
}
_WHY_NOT = {
    "yarn": "YaRN multiplies cos and sin by an attention factor (mscale) besides rescaling the "
            "frequencies, and the decoder's RoPE table carries angles only (megatron-core's "
            "YarnRotaryEmbedding returns the factor separately, for its own attention path)",
    "dynamic": "dynamic NTK scaling changes the frequencies with each sequence's length, while "
               "the decoder's table is fixed per position (slots repeat positions)",
    "longrope": "LongRoPE's per-frequency factors and attention factor are not implemented",
}


def _refuse(field: str, value, why: str) -> ConfigError:
    return ConfigError(f"config.json {field}={value!r} cannot be imported: {why}")


def _scaling(hf: dict) -> tuple[str, dict] | None:
    """(field name, its mapping) of the one non-default RoPE type in config.json, or None."""
    found = []
    for field in ("rope_parameters", "rope_scaling"):
        rope = hf.get(field)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise _refuse(field, rope, "expected an object")
        if rope.get("rope_type", rope.get("type", "default")) != "default":
            found.append((field, rope))
    if len(found) == 2 and {k: v for k, v in found[0][1].items() if k != "rope_theta"} != \
            {k: v for k, v in found[1][1].items() if k != "rope_theta"}:
        raise _refuse("rope_scaling", found[1][1], f"it disagrees with rope_parameters="
                      f"{found[0][1]!r}; keep one of them")
    return found[0] if found else None


def rope_fields(hf: dict) -> dict:
    """config.json -> the model's rotary_base and rope_* fields (null where unscaled)."""
    theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta"))
    fields = {"rotary_base": float(theta if theta is not None else _DEFAULT_ROPE_THETA),
              "rope_scaling": None, **{name: None for name in _FIELDS["llama3"].values()}}
    for field in ("rope_parameters", "rope_scaling"):
        partial = (hf.get(field) or {}).get("partial_rotary_factor", 1.0)
        if float(partial or 1.0) != 1.0:
            raise _refuse(f"{field}.partial_rotary_factor", partial,
                          "the decoder rotates the whole head")
    found = _scaling(hf)
    if found is None:
        return fields
    field, rope = found
    kind = rope.get("rope_type", rope.get("type"))
    if kind not in _FIELDS:
        why = _WHY_NOT.get(kind, "an unknown RoPE type")
        raise _refuse(f"{field}.rope_type", kind, f"{why}; importable: default (plain RoPE), "
                      f"{', '.join(_FIELDS)}")
    fields["rope_scaling"] = kind
    for key, name in _FIELDS[kind].items():
        value = rope.get(key)
        if key == "original_max_position_embeddings" and value is None:
            value = hf.get("original_max_position_embeddings")  # transformers' fallback
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value <= 0:
            raise _refuse(f"{field}.{key}", value, f"rope_type {kind!r} needs a number > 0")
        fields[name] = value if name == "rope_original_max_positions" else float(value)
    if kind == "llama3" and not float(rope["high_freq_factor"]) > float(rope["low_freq_factor"]):
        raise _refuse(f"{field}.high_freq_factor", rope["high_freq_factor"],
                      "must exceed low_freq_factor")
    if kind == "llama3" and not float(fields["rope_original_max_positions"]).is_integer():
        raise _refuse(f"{field}.original_max_position_embeddings",
                      fields["rope_original_max_positions"], "must be a whole number")
    if fields["rope_original_max_positions"] is not None:
        fields["rope_original_max_positions"] = int(fields["rope_original_max_positions"])
    return fields


def hf_rope_parameters(m: ModelConfig) -> dict:
    """The model's RoPE as transformers 5's `rope_parameters` (what its configs take)."""
    if m.rope_scaling is None:
        return {"rope_type": "default", "rope_theta": m.rotary_base}
    params = {"rope_type": m.rope_scaling, "rope_theta": m.rotary_base}
    params |= {key: getattr(m, name) for key, name in _FIELDS[m.rope_scaling].items()}
    return params
