"""Baseline (a), the floor: read and parse the input, write one answer line per request to shards.

    python -m bench.floor INPUT OUT_DIR [--shards 16]

No network and no ledger: the least any Python program must do to turn N request lines into N
answer lines on disk. Written to be as fast as Python goes on one core: the input is read in 8 MiB
blocks and split by hand, each line is parsed with orjson (as the scheduler must, to learn its
custom_id), the answer is one bytes format with the id, routed to its shard with the scheduler's
rule (CRC-32 % shards) into per-shard buffers, written in big writes and fsync'd once at the end.
The answer line has the shape and size of the simulator's `succeeded` line, so the floor writes as
many bytes as the scheduler does.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import zlib

import orjson

BLOCK_BYTES = 8 << 20
FLUSH_BYTES = 8 << 20

ANSWER = (
    b'{"custom_id":"%s","result":{"type":"succeeded","message":{"id":"msg_floor%08x","type":"message",'
    b'"role":"assistant","model":"claude-sonnet-4-5","content":[{"type":"text","text":"answer:%s"}],'
    b'"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":200,"output_tokens":40,'
    b'"cache_creation_input_tokens":0,"cache_read_input_tokens":0}}}}\n'
)


def run(inp: str, out_dir: str, nshards: int) -> int:
    os.makedirs(os.path.join(out_dir, "results"), exist_ok=True)
    fds = [os.open(os.path.join(out_dir, "results", f"shard-{i:05d}.jsonl"),
                   os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600) for i in range(nshards)]
    bufs = [bytearray() for _ in range(nshards)]
    loads, crc32, answer, write = orjson.loads, zlib.crc32, ANSWER, os.write
    n = 0
    buffered = 0
    rest = b""
    with open(inp, "rb", buffering=0) as f:
        while True:
            block = f.read(BLOCK_BYTES)
            if not block:
                break
            lines = (rest + block).split(b"\n") if rest else block.split(b"\n")
            rest = lines.pop()
            for line in lines:
                if not line:
                    continue
                cid = loads(line)["custom_id"].encode()
                out = answer % (cid, n, cid)
                bufs[crc32(cid) % nshards] += out
                buffered += len(out)
                n += 1
            if buffered >= FLUSH_BYTES:
                for fd, buf in zip(fds, bufs, strict=True):
                    write(fd, buf)
                    buf.clear()
                buffered = 0
        if rest.strip():
            cid = loads(rest)["custom_id"].encode()
            bufs[crc32(cid) % nshards] += answer % (cid, n, cid)
            n += 1
    for fd, buf in zip(fds, bufs, strict=True):
        write(fd, buf)
        os.fsync(fd)
        os.close(fd)
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("input")
    ap.add_argument("out_dir")
    ap.add_argument("--shards", type=int, default=16)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    n = run(args.input, args.out_dir, args.shards)
    wall = time.perf_counter() - t0
    summary = {"requests": n, "lines_written": n, "wall_time_s": round(wall, 3)}
    with open(os.path.join(args.out_dir, "bench-summary.json"), "wb") as f:
        f.write(orjson.dumps(summary))
    print(f"floor: {n:,} answer lines in {wall:.2f}s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
