"""Moved to megatron_ponder/comm_device.py (a lower level: model/ needs it too); this name is
kept for code written against the first location."""

from megatron_ponder.comm_device import comm_device, comm_empty, comm_tensor

__all__ = ["comm_device", "comm_empty", "comm_tensor"]
