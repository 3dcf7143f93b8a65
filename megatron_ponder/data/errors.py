"""The one exception the data layer raises for bad inputs.

A `DataError` is a `ConfigError` (and so a `ValueError`): whatever reports configuration
errors cleanly before training also reports a missing corpus, a truncated .bin or a tokenizer
that does not fit, without a numpy or sentencepiece traceback. Every message names the file
(and line, where there is one) and says what would be valid or how to fix it.
"""

from __future__ import annotations

from megatron_ponder.config import ConfigError


class DataError(ConfigError):
    """A data file or tokenizer is missing, malformed or does not fit the configuration."""
