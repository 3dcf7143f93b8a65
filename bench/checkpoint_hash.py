"""Cost of the checkpoint manifest's checksums, per GB: the candidate hashes over the same
bytes in memory, and the manifest's own file_digest over a file in the page cache (what a
verify right after a save, or of a recently read checkpoint, costs; a cold read from disk
adds the disk's own time, the same for every hash).

    python bench/checkpoint_hash.py                  # 1024 MiB, 3 rounds
    python bench/checkpoint_hash.py --size-mb 64 --rounds 1    # smoke test

Each round times every candidate once, interleaved (robust to a shared machine's slow
phases); the reported time is the fastest round. Last stdout line: one JSON object.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from megatron_ponder.run.manifest import (  # noqa: E402
    ALGORITHM, CHUNK_BYTES, file_digest,
)


def _hashlib(name: str):
    def run(view: memoryview) -> None:
        h = hashlib.new(name)
        for i in range(0, len(view), CHUNK_BYTES):
            h.update(view[i:i + CHUNK_BYTES])
        h.digest()
    return run


def _crc32(view: memoryview) -> None:
    crc = 0
    for i in range(0, len(view), CHUNK_BYTES):
        crc = zlib.crc32(view[i:i + CHUNK_BYTES], crc)


def candidates() -> dict:
    found = {"sha256": _hashlib("sha256"), "blake2b": _hashlib("blake2b"),
             "md5": _hashlib("md5"), "crc32 (zlib)": _crc32}
    try:
        import xxhash  # defer: xxhash, an optional package, only when installed
    except ImportError:
        return found
    for name in ("xxh3_128", "xxh3_64"):
        def run(view: memoryview, new=getattr(xxhash, name)) -> None:
            h = new()
            for i in range(0, len(view), CHUNK_BYTES):
                h.update(view[i:i + CHUNK_BYTES])
            h.digest()
        found[name] = run
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    data = os.urandom(args.size_mb << 20)
    view = memoryview(data)
    gib = len(data) / (1 << 30)
    best: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="checkpoint_hash_") as tmp:
        path = Path(tmp) / "shard.distcp"
        path.write_bytes(data)
        manifest_file = f"manifest file_digest ({ALGORITHM}, page cache)"
        runs = {**candidates(), manifest_file: lambda _: file_digest(path)}
        for _ in range(args.rounds):
            for name, run in runs.items():
                start = time.perf_counter()
                run(view)
                elapsed = time.perf_counter() - start
                best[name] = min(best.get(name, float("inf")), elapsed)
    print(f"{args.size_mb} MiB, fastest of {args.rounds} round(s); load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'hash':<50s} {'s per GiB':>10s} {'GiB/s':>8s}")
    for name, seconds in best.items():
        print(f"{name:<50s} {seconds / gib:>10.3f} {gib / seconds:>8.2f}")
    print(json.dumps({"size_mib": args.size_mb, "rounds": args.rounds,
                      "load_average_1min": os.getloadavg()[0], "cpus": os.cpu_count(),
                      "manifest_algorithm": ALGORITHM,
                      "seconds_per_gib": {k: round(v / gib, 4) for k, v in best.items()}}))


if __name__ == "__main__":
    main()
