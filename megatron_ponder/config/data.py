"""data: the token data a run reads, and its checks."""

from __future__ import annotations

from dataclasses import dataclass, field

from megatron_ponder.config.checks import require


@dataclass
class DataConfig:
    """Token data: megatron indexed datasets (.bin/.idx) read through GPTDataset."""

    # A sentencepiece .model, or a Hugging Face tokenizer folder with tokenizer.json (or that
    # file); the model's vocabulary must hold every id it produces.
    tokenizer: str = ""
    # The end-of-document token appended to every document (its text, e.g. "<|endoftext|>");
    # "" = the tokenizer's EOS. Must be a token of data.tokenizer (checked when it is loaded).
    eod_token: str = ""
    # Path prefixes of indexed datasets (PREFIX.bin / PREFIX.idx), blended by `weights`.
    prefixes: list[str] = field(default_factory=list)
    # Sampling weights of the prefixes (normalised); empty = proportional to their sizes.
    weights: list[float] = field(default_factory=list)
    # Train/valid/test split of every corpus by documents, as megatron's "969,30,1".
    split: str = "969,30,1"
    # Tokens per training sequence (<= model.max_position_embeddings).
    seq_length: int = 128
    # Where GPTDataset's index caches are built once and reused; "" = next to the run.
    cache_dir: str = ""

    def validate(self, max_position_embeddings: int) -> None:
        require(len(self.weights) in (0, len(self.prefixes)), "data.weights", self.weights,
                f"must be empty or have one weight per data.prefixes entry ({len(self.prefixes)})")
        require(all(w > 0 for w in self.weights), "data.weights", self.weights, "must all be > 0")
        parts = self.split.replace("/", ",").split(",")
        require(len(parts) == 3 and all(p.strip().replace(".", "", 1).isdigit() for p in parts)
                and sum(float(p) for p in parts) > 0, "data.split", self.split,
                'must be three non-negative numbers such as "969,30,1"')
        require(1 <= self.seq_length <= max_position_embeddings, "data.seq_length",
                self.seq_length, f"must be in [1, model.max_position_embeddings="
                f"{max_position_embeddings}]")
