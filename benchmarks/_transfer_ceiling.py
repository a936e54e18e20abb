"""The ceiling of the artifact transfers: 64 MB streamed through Python gRPC on loopback between
two processes, against ``shutil.copyfile`` + fsync of a 64 MB file on the same disk.

Per repeat, back to back (ratios per repeat, then the median), a server process streams the
bytes from memory, 4 MiB messages, and this process receives them as:

- ``protobuf``: ``FileChunk`` messages through the generated stubs, nothing else;
- ``raw``: plain bytes messages (identity serializers), nothing else;
- ``raw+sha256``: raw, hashed on the receiving thread;
- ``raw+sha256+write``: raw, hashed on a helper thread while this one writes the file (no
  fsync): the least a verified download does, with no disk read on the server and no framing.

Both processes set malloc as the store and the client do (:func:`zoo_store.keep_freed_memory`).
Also timed alone: sha256 of 64 MB in memory, and writing 64 MB to a new file + fsync.

Usage: ``OMP_NUM_THREADS=1 python -m benchmarks._transfer_ceiling [--repeats 7] [--json]``
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

SIZE = 64 << 20
CHUNK = 4 << 20
_OPTIONS = [("grpc.max_receive_message_length", 2 * CHUNK), ("grpc.max_send_message_length", 2 * CHUNK)]


def _identity(data: bytes) -> bytes:
    return data


def _serve() -> None:
    from concurrent import futures

    import grpc

    from nasoa_api.v1 import artifact_pb2 as apb
    from nasoa_api.v1 import artifact_pb2_grpc
    from zoo_store import keep_freed_memory

    keep_freed_memory()
    data = os.urandom(SIZE)

    class Chunks(artifact_pb2_grpc.ArtifactServiceServicer):
        def DownloadFile(self, request: Any, context: Any) -> Iterator[Any]:
            for at in range(0, SIZE, CHUNK):
                yield apb.FileChunk(offset=at, data=data[at : at + CHUNK], total_size=SIZE)

    def raw(request: bytes, context: Any) -> Iterator[bytes]:
        for at in range(0, SIZE, CHUNK):
            yield data[at : at + CHUNK]

    server = grpc.server(futures.ThreadPoolExecutor(4), options=_OPTIONS)
    artifact_pb2_grpc.add_ArtifactServiceServicer_to_server(Chunks(), server)
    handler = grpc.unary_stream_rpc_method_handler(raw, request_deserializer=_identity, response_serializer=_identity)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("ceiling.Raw", {"Get": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    server.wait_for_termination()


def _receivers(port: int, folder: str) -> dict[str, Callable[[], None]]:
    import grpc

    from nasoa_api.v1 import artifact_pb2 as apb
    from nasoa_api.v1 import artifact_pb2_grpc

    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=_OPTIONS)
    stub = artifact_pb2_grpc.ArtifactServiceStub(channel)
    get = channel.unary_stream("/ceiling.Raw/Get", request_serializer=_identity, response_deserializer=_identity)

    def protobuf() -> None:
        for chunk in stub.DownloadFile(apb.DownloadFileRequest()):
            chunk.data  # noqa: B018 - the copy out of the message is part of the cost

    def raw() -> None:
        for _ in get(b""):
            pass

    def raw_sha256() -> None:
        digest = hashlib.sha256()
        for data in get(b""):
            digest.update(data)

    def raw_sha256_write() -> None:
        digest, waiting = hashlib.sha256(), queue.Queue[bytes | None](4)

        def hash_all() -> None:
            while (data := waiting.get()) is not None:
                digest.update(data)

        hasher = threading.Thread(target=hash_all)
        hasher.start()
        with open(os.path.join(folder, "received"), "wb") as out:
            for data in get(b""):
                waiting.put(data)
                out.write(data)
        waiting.put(None)
        hasher.join()
        os.unlink(os.path.join(folder, "received"))

    return {"protobuf": protobuf, "raw": raw, "raw+sha256": raw_sha256, "raw+sha256+write": raw_sha256_write}


def run_ceiling(repeats: int = 7) -> dict[str, Any]:
    from zoo_store import keep_freed_memory

    keep_freed_memory()
    folder = tempfile.mkdtemp(prefix="nasoa-ceiling-", dir=os.environ.get("NASOA_BENCH_DIR"))
    server = subprocess.Popen([sys.executable, "-m", "benchmarks._transfer_ceiling", "--serve"], stdout=subprocess.PIPE)
    try:
        port = int(server.stdout.readline())  # type: ignore[union-attr]
        source = os.path.join(folder, "source")
        data = os.urandom(SIZE)
        with open(source, "wb") as f:
            f.write(data)

        def copy() -> None:
            shutil.copyfile(source, os.path.join(folder, "copy"))
            with open(os.path.join(folder, "copy"), "rb+") as f:
                os.fsync(f.fileno())
            os.unlink(os.path.join(folder, "copy"))

        ops = {"copy": copy, **_receivers(port, folder)}
        speeds: dict[str, list[float]] = {name: [] for name in ops}
        for _ in range(repeats):
            for name, op in ops.items():
                start = time.perf_counter()
                op()
                speeds[name].append(SIZE / (1 << 20) / (time.perf_counter() - start))
        start = time.perf_counter()
        hashlib.sha256(data).hexdigest()
        sha_ms = 1e3 * (time.perf_counter() - start)
        start = time.perf_counter()
        with open(os.path.join(folder, "written"), "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        write_ms = 1e3 * (time.perf_counter() - start)
    finally:
        server.kill()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)
    copies = speeds["copy"]
    return {
        "repeats": repeats, "load_average": os.getloadavg()[0], "sha256_64mb_ms": sha_ms, "write_fsync_64mb_ms": write_ms,
        "mb_s": {name: statistics.median(v) for name, v in speeds.items()},
        "vs_copy": {name: statistics.median(s / c for s, c in zip(v, copies, strict=True))
                    for name, v in speeds.items() if name != "copy"},
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return
    r = run_ceiling(args.repeats)
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"64 MB, {CHUNK >> 20} MiB messages, medians of {r['repeats']} (load average {r['load_average']:.1f}):")
    print(f"  copyfile + fsync     {r['mb_s']['copy']:6.0f} MB/s")
    for name, ratio in r["vs_copy"].items():
        print(f"  {name:20s} {r['mb_s'][name]:6.0f} MB/s  {100 * ratio:3.0f}% of the copy")
    print(f"  alone: sha256 {r['sha256_64mb_ms']:.0f} ms, write + fsync {r['write_fsync_64mb_ms']:.0f} ms")


if __name__ == "__main__":
    main()
