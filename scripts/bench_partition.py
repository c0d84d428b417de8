#!/usr/bin/env python
"""Measure the planning side of a 10-million-object run: reading a key manifest and partitioning it.

Generates a manifest like an S3 Inventory CSV (``bucket,key,size,last_modified_epoch``) with ``--keys``
objects, then times (1) parsing it into `InputItem` records, (2) assigning each to one of
``--shards`` shards with `shard_of` (the same stable hash as ``--shard i/n``), and (3) writing one list
file of URLs per shard (what each node's ``vidattn score @shard-i.txt`` reads). Prints seconds, keys/s
and the process's peak resident memory (MB, before and after), as JSON.

Example:
    python scripts/bench_partition.py --keys 1000000 --shards 100
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from vidattn.scoring.inputs import InputItem, shard_of


def write_manifest(path: Path, keys: int, seed: int = 0) -> int:
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as f:
        for i in range(keys):
            folder = f"{rng.randrange(10_000):04d}"
            f.write(f"archive,videos/{folder}/clip-{i:08d}.mp4,{rng.randrange(1 << 20, 1 << 26)},{1.7e9 + i}\n")
    return path.stat().st_size


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--shards", type=int, default=100)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench_partition_") as tmp:
        tmp = Path(tmp)
        manifest = tmp / "inventory.csv"
        size = write_manifest(manifest, args.keys)
        result: dict[str, object] = {"keys": args.keys, "shards": args.shards, "manifest_mb": round(size / 1e6, 1)}

        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3
        t0 = time.perf_counter()
        items = []
        with manifest.open(encoding="utf-8") as f:
            for line in f:
                bucket, key, nbytes, mtime = line.rstrip("\n").split(",")
                url = f"s3://{bucket}/{key}"
                items.append(InputItem(url, url, None, int(nbytes), float(mtime)))
        t1 = time.perf_counter()
        shards: list[list[InputItem]] = [[] for _ in range(args.shards)]
        for item in items:
            shards[shard_of(item.unit, args.shards)].append(item)
        t2 = time.perf_counter()
        for i, part in enumerate(shards):
            (tmp / f"shard-{i}.txt").write_text("".join(f"{it.key}\n" for it in part), encoding="utf-8")
        t3 = time.perf_counter()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3  # KiB on Linux
        sizes = [len(p) for p in shards]
        result.update(
            parse_s=round(t1 - t0, 2),
            partition_s=round(t2 - t1, 2),
            write_lists_s=round(t3 - t2, 2),
            total_s=round(t3 - t0, 2),
            keys_per_s=round(args.keys / (t3 - t0)),
            rss_before_mb=round(rss0),
            peak_rss_mb=round(peak),
            shard_min=min(sizes),
            shard_max=max(sizes),
        )
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
