"""Inference with the hard pruning rule: scoring, the slot KV cache, decoding."""
