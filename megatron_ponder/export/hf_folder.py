"""Read a Hugging Face model folder: config.json and its safetensors weights, one file or
sharded with `model.safetensors.index.json`. Every problem is a ConfigError naming the file
(or the tensor) and what was expected; nothing is guessed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from megatron_ponder.config import ConfigError

CONFIG = "config.json"
SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"


def read_config(folder: str | Path) -> dict:
    folder = Path(folder)
    path = folder / CONFIG
    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a directory: expected a Hugging Face model folder")
    if not path.is_file():
        raise ConfigError(f"{path} is missing: a Hugging Face model folder holds config.json "
                          f"next to its weights")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ConfigError(f"{path} must hold a JSON object, got {type(config).__name__}")
    return config


def _shard_map(folder: Path) -> dict[str, str]:
    """tensor name -> shard file name, from the index (validated)."""
    path = folder / INDEX
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is corrupt: not valid JSON ({err})") from None
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()):
        raise ConfigError(f"{path} is corrupt: expected a non-empty \"weight_map\" object of "
                          f"tensor name -> shard file name")
    for shard in set(weight_map.values()):
        if Path(shard).name != shard:
            raise ConfigError(f"{path} is corrupt: shard {shard!r} is not a file name in {folder}")
    return weight_map


def _load(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise ConfigError(f"{path} is missing")
    try:
        return load_file(str(path))
    except Exception as err:  # safetensors raises its own SafetensorError on a bad file
        raise ConfigError(f"{path} is not a readable safetensors file ({err})") from None


def read_weights(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of the folder by its Hugging Face name (dtype as stored)."""
    folder = Path(folder)
    if (folder / INDEX).is_file():
        weight_map = _shard_map(folder)
        tensors: dict[str, torch.Tensor] = {}
        for shard in sorted(set(weight_map.values())):
            path = folder / shard
            if not path.is_file():
                raise ConfigError(f"shard {path} is missing (listed in {folder / INDEX})")
            loaded = _load(path)
            for name in (n for n, s in weight_map.items() if s == shard):
                if name not in loaded:
                    raise ConfigError(f"{folder / INDEX} lists {name} in {shard}, which does not "
                                      f"hold it")
                tensors[name] = loaded[name]
        return tensors
    if (folder / SINGLE).is_file():
        return _load(folder / SINGLE)
    raise ConfigError(f"{folder} holds neither {SINGLE} nor {INDEX}: only safetensors weights "
                      f"are read (convert pytorch_model.bin with transformers' save_pretrained)")
