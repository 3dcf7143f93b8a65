"""Hugging Face RoPE settings <-> the model's rotary fields, both directions in one place.

config.json carries them as `rope_scaling` (transformers 4: the scaling, with `rope_theta`
beside it) or `rope_parameters` (transformers 5: both). The decoder implements plain RoPE and
the `linear`, `llama3` and `yarn` scalings (model/rope.py); every other type is refused with
why.
"""

from __future__ import annotations

import math

from megatron_ponder.config import ConfigError, ModelConfig

_DEFAULT_ROPE_THETA = 10000.0  # transformers' default where config.json leaves it out
# rope type -> {Hugging Face key: model field} of the keys that type reads.
_FIELDS = {
    "linear": {"factor": "rope_scaling_factor"},
    "llama3": {"factor": "rope_scaling_factor", "low_freq_factor": "rope_low_freq_factor",
               "high_freq_factor": "rope_high_freq_factor",
               "original_max_position_embeddings": "rope_original_max_positions"},
    "yarn": {"factor": "rope_scaling_factor",
             "original_max_position_embeddings": "rope_original_max_positions",
             "beta_fast": "rope_beta_fast", "beta_slow": "rope_beta_slow",
             "attention_factor": "rope_attention_factor"},
}
_ALL_FIELDS = sorted({name for fields in _FIELDS.values() for name in fields.values()})
_WHY_NOT = {
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


def _yarn_defaults(field: str, rope: dict, hf: dict) -> dict:
    """transformers' YaRN defaults filled in (`_compute_yarn_parameters`), so the run's config
    holds every number the model uses; DeepSeek's mscale variants and truncate=false refused."""
    for key in ("mscale", "mscale_all_dim"):
        if rope.get(key):
            raise _refuse(f"{field}.{key}", rope[key], "DeepSeek's YaRN attention-factor variant "
                          "is not implemented (only the default 0.1 ln(factor) + 1)")
    if rope.get("truncate", True) is not True:
        raise _refuse(f"{field}.truncate", rope["truncate"], "only YaRN's default ramp over "
                      "whole channel pairs (truncate true) is implemented")
    rope = dict(rope)
    original = rope.get("original_max_position_embeddings")
    if rope.get("factor") is None and isinstance(original, (int, float)) and original > 0:
        rope["factor"] = hf.get("max_position_embeddings", 0) / original
    rope.setdefault("beta_fast", 32.0)
    rope.setdefault("beta_slow", 1.0)
    rope["beta_fast"], rope["beta_slow"] = rope["beta_fast"] or 32.0, rope["beta_slow"] or 1.0
    factor = rope.get("factor")
    if rope.get("attention_factor") is None and isinstance(factor, (int, float)) and factor > 0:
        rope["attention_factor"] = 1.0 if factor <= 1 else 0.1 * math.log(factor) + 1.0
    return rope


def rope_fields(hf: dict) -> dict:
    """config.json -> the model's rotary_base and rope_* fields (null where unscaled)."""
    theta = hf.get("rope_theta", (hf.get("rope_parameters") or {}).get("rope_theta"))
    fields = {"rotary_base": float(theta if theta is not None else _DEFAULT_ROPE_THETA),
              "rope_scaling": None, **{name: None for name in _ALL_FIELDS}}
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
    if kind == "yarn":
        rope = _yarn_defaults(field, rope, hf)
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
    if kind == "yarn" and not fields["rope_beta_fast"] > fields["rope_beta_slow"]:
        raise _refuse(f"{field}.beta_fast", rope["beta_fast"], "must exceed beta_slow")
    if kind != "linear" and not float(fields["rope_original_max_positions"]).is_integer():
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
