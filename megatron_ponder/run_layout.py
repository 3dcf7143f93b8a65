"""What a training run's directory holds.

    <train.output_dir>/            a run: config.yaml, metrics.jsonl, checkpoints/
      checkpoints/                 latest_checkpointed_iteration.txt, step_NNNNNNN/
        step_NNNNNNN/              one checkpoint: metadata.json, manifest.json, common.pt, *.distcp

Light on purpose (no torch): light tools import it.
"""

from __future__ import annotations

import re

CONFIG_FILE = "config.yaml"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS_DIR = "checkpoints"
TRACKER = "latest_checkpointed_iteration.txt"
STEP_DIR = re.compile(r"^step_(\d{7})$")
MANIFEST = "manifest.json"
