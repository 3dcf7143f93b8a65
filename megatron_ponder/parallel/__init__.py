"""Process groups and parallel engines."""

from megatron_ponder.parallel.setup import destroy_parallel, initialize_parallel

__all__ = ["destroy_parallel", "initialize_parallel"]
