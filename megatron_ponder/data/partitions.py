"""Partitioned preprocessing: which units a part takes, its record, and the merge.

Part I of N writes PREFIX.part-0000I-of-0000N.bin/.idx and then its record,
PREFIX.part-0000I-of-0000N.json: the whole input list (paths, sizes, mtimes: the split
depends on every file's size), the text key, the tokenizer's content hash, the token dtype,
and the size and XXH3-128 of the .bin and .idx. A rerun skips a part only when its record
matches the current inputs and tokenizer *and* both files still have the recorded checksums;
otherwise it redoes the part. `indexed.merge` checks every record the same way, then
concatenates the parts in order with megatron-core's `IndexedDatasetBuilder.add_index`, so
the merged pair is byte-identical to an unpartitioned run.

Units (sources.py: a Parquet row group or a whole file) go to parts as contiguous runs,
balanced by bytes on disk: unit k goes to the part its byte midpoint falls in.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import xxhash

from megatron_ponder.data.errors import DataError
from megatron_ponder.data.sources import Unit
from megatron_ponder.run.layout import write_atomically

RECORD_VERSION = 1


def check_partition(partition: int | None, partitions: int | None) -> None:
    if partitions is None and partition is None:
        return
    if partitions is None or partition is None:
        raise DataError("--partition and --partitions go together (--partition I "
                        "--partitions N, 0 <= I < N)")
    if partitions < 1 or not 0 <= partition < partitions:
        raise DataError(f"--partition {partition} --partitions {partitions} is invalid: "
                        f"need N >= 1 and 0 <= I < N")


def part_prefix(prefix: str, partition: int, partitions: int) -> str:
    return f"{prefix}.part-{partition:05d}-of-{partitions:05d}"


def units_of_part(units: list[Unit], partition: int, partitions: int) -> list[Unit]:
    if len(units) < partitions:
        raise DataError(f"--partitions {partitions} is more than the inputs can be split into: "
                        f"{len(units)} units (files, Parquet row groups); use at most "
                        f"{len(units)} partitions")
    total = sum(u.weight for u in units)
    mine, start = [], 0
    for unit in units:
        midpoint = start + unit.weight / 2
        if min(partitions - 1, int(midpoint * partitions / total)) == partition:
            mine.append(unit)
        start += unit.weight
    if not mine:
        raise DataError(f"part {partition} of {partitions} gets no input: the units are too "
                        f"uneven in size ({len(units)} units); use fewer partitions")
    return mine


def _digest(path: Path) -> str:
    """XXH3-128 of the file (as checkpoint manifests use): ~10 GB/s, so verifying a
    100 GB part on a rerun costs seconds, not the hours of redoing it."""
    with open(path, "rb") as stream:
        return hashlib.file_digest(stream, xxhash.xxh3_128).hexdigest()


def tokenizer_hash(files: list[Path]) -> str:
    """Digest of the files that make up a tokenizer (Tokenizer.files(): for a model folder the
    tokenizer's own files, not the weights beside them)."""
    digest = xxhash.xxh3_128()
    for file in sorted(Path(f) for f in files):
        digest.update(file.name.encode())
        digest.update(_digest(file).encode())
    return digest.hexdigest()


def part_inputs(files: list[Path], text_key: str, tokenizer, dtype, partitions: int) -> dict:
    """What a part's output depends on; a rerun with other values redoes the part. The
    end-of-document id is in it because --eod-token changes the tokens without changing
    the tokenizer's files."""
    return {"version": RECORD_VERSION, "partitions": partitions, "text_key": text_key,
            "tokenizer_xxh3": tokenizer_hash(tokenizer.files()), "eod_id": tokenizer.eod_id,
            "dtype": str(dtype.__name__ if isinstance(dtype, type) else dtype),
            "inputs": [[str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns]
                       for p in files]}


def _outputs(prefix: str) -> dict:
    return {suffix: {"bytes": os.path.getsize(prefix + suffix),
                     "xxh3_128": _digest(Path(prefix + suffix))}
            for suffix in (".bin", ".idx")}


def write_record(prefix: str, inputs: dict, stats: dict) -> None:
    record = {**inputs, "outputs": _outputs(prefix), "stats": stats}
    write_atomically(prefix + ".json", json.dumps(record, indent=1) + "\n")


def _read_record(prefix: str) -> dict | None:
    try:
        return json.loads(Path(prefix + ".json").read_text())
    except (OSError, ValueError):
        return None


def complete_part(prefix: str, inputs: dict | None) -> tuple[dict | None, str]:
    """(record, "") if the part at `prefix` is complete and (when given) made from `inputs`;
    else (None, why not)."""
    record = _read_record(prefix)
    if record is None:
        return None, f"no readable record {prefix}.json"
    if inputs is not None:
        changed = [k for k in inputs if record.get(k) != inputs[k]]
        if changed:
            return None, f"its record differs in {', '.join(changed)}"
    for suffix, expected in record.get("outputs", {}).items():
        path = Path(prefix + suffix)
        if not path.is_file() or path.stat().st_size != expected["bytes"]:
            return None, f"{path} is missing or has another size than recorded"
        if _digest(path) != expected["xxh3_128"]:
            return None, f"{path} does not have the recorded checksum"
    if set(record.get("outputs", {})) != {".bin", ".idx"}:
        return None, f"{prefix}.json records no outputs"
    return record, ""


def remove_record(prefix: str) -> None:
    Path(prefix + ".json").unlink(missing_ok=True)


def verified_parts(prefix: str, partitions: int) -> list[tuple[str, dict]]:
    """Every part of PREFIX, checked; DataError naming the missing or damaged ones."""
    parts, problems = [], []
    for index in range(partitions):
        part = part_prefix(prefix, index, partitions)
        record, why = complete_part(part, None)
        if record is None:
            problems.append(f"part {index} ({why})")
        else:
            parts.append((part, record))
    if problems:
        raise DataError(f"cannot merge {prefix}: {len(problems)} of {partitions} parts are not "
                        f"complete: {'; '.join(problems)}; run those partitions (again)")
    first = parts[0][1]
    for part, record in parts[1:]:
        for key in ("partitions", "text_key", "tokenizer_xxh3", "dtype", "inputs"):
            if record.get(key) != first.get(key):
                raise DataError(f"cannot merge {prefix}: {part} was made with another {key} "
                                f"than {parts[0][0]}; rerun it with the same arguments")
    return parts
