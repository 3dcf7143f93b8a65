"""Checksums of a checkpoint's files: `manifest.json`, written into the checkpoint's temporary
directory before the rename that completes it, and checked before anything reads it.

A flipped byte or a truncated file in a `.distcp` shard or `common.pt` would otherwise load
without complaint (torch's reader does not check its data). The hash is xxHash's XXH3-128:
it only has to catch accidents, not adversaries, and it is several times faster than
sha256 or blake2b (bench/checkpoint_hash.py; bench/README.md has the numbers per GB).
With several processes the files are hashed in a round-robin share per rank.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path

import torch.distributed as dist
import xxhash

from megatron_ponder.run.layout import MANIFEST

ALGORITHM = "xxh3_128"
FORMAT = 1
CHUNK_BYTES = 8 << 20


def file_digest(path: Path) -> str:
    """XXH3-128 of the file, read through a memory map (no copy out of the page cache:
    about twice as fast as read() into a buffer)."""
    h = xxhash.xxh3_128()
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size == 0:
            return h.hexdigest()
        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
            mapped.madvise(mmap.MADV_SEQUENTIAL)
            view = memoryview(mapped)
            try:
                for start in range(0, len(view), CHUNK_BYTES):
                    h.update(view[start:start + CHUNK_BYTES])
            finally:
                view.release()  # the map cannot close while a view exists
    return h.hexdigest()


def _files(directory: Path) -> list[str]:
    """Every file of the checkpoint but the manifest (and its temporary, left by a crash
    while it was written), as sorted relative paths."""
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*")
                  if p.is_file() and p.name not in (MANIFEST, MANIFEST + ".tmp"))


def _split() -> bool:
    return dist.is_initialized() and dist.get_world_size() > 1


def _share(names: list[str]) -> list[str]:
    """This rank's round-robin share of `names` (the same list on every rank)."""
    return names[dist.get_rank()::dist.get_world_size()] if _split() else names


def _gather(part: dict) -> dict:
    if not _split():
        return part
    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, part)
    return {k: v for p in parts for k, v in p.items()}


def write_manifest(directory: Path) -> None:
    """Hash every file of `directory` (a collective when several processes run: every rank
    calls it) and write the manifest there, atomically; rank 0 writes."""
    directory = Path(directory)
    names = [_files(directory)]
    if _split():  # rank 0's listing for all: another node's directory cache may lag
        dist.broadcast_object_list(names, src=0)
    entries = _gather({n: {"bytes": (directory / n).stat().st_size,
                           ALGORITHM: file_digest(directory / n)} for n in _share(names[0])})
    if _split() and dist.get_rank() != 0:
        return
    tmp = directory / (MANIFEST + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"format": FORMAT, "algorithm": ALGORITHM, "files": dict(sorted(entries.items()))},
                  f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / MANIFEST)


def verify(directory: Path) -> list[str] | None:
    """The files of `directory` that do not match its manifest, each with what is wrong
    (empty: all match); None when it has no manifest (written before checksums existed).
    A collective when several processes run."""
    directory = Path(directory)
    manifest = directory / MANIFEST
    if not manifest.is_file():
        return None
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
        if data.get("algorithm") != ALGORITHM:
            raise ValueError(f"algorithm {data.get('algorithm')!r}, expected {ALGORITHM!r}")
        if not all(isinstance(e.get("bytes"), int) and isinstance(e.get(ALGORITHM), str)
                   for e in files.values()):
            raise ValueError("an entry without bytes or checksum")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        return [f"{MANIFEST}: unreadable ({type(err).__name__}: {err})"]
    mine = {name: _check(directory / name, files[name]) for name in _share(sorted(files))}
    problems = _gather({name: problem for name, problem in mine.items() if problem})
    return [f"{n}: {problems[n]}" for n in sorted(problems)]


def _check(path: Path, entry: dict) -> str | None:
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return "missing"
    if size != entry["bytes"]:
        return f"{size} bytes, the manifest says {entry['bytes']} (truncated or overwritten)"
    if file_digest(path) != entry[ALGORITHM]:
        return "checksum mismatch (the data changed after it was written)"
    return None
