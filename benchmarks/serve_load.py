"""Load on ``transeg serve``: N concurrent clients posting one image for T seconds, per backend.

Starts a local server (uvicorn, 127.0.0.1, a free port) for each backend in turn (eager, ONNX, and
INT8 when ``--int8 FILE`` names the model's ``transeg export --int8`` file), then reports requests/s
and p50/p99 latency as a table.

    python benchmarks/serve_load.py [--model segformer-b0] [--size 512 512] [--clients 4] [--seconds 15]
"""

from __future__ import annotations

import argparse
import io
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(model: str, backend: str, threads: int) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    process = subprocess.Popen([sys.executable, "-m", "transeg", "serve", model, "--port", str(port), "--backend",
                                backend], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600  # the first ONNX export takes a while
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"{backend}: the server exited: {process.stderr.read()[-1000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.5)
    process.kill()
    raise SystemExit(f"{backend}: the server did not start")


def _load(url: str, image: bytes, clients: int, seconds: float) -> tuple[list[float], int]:
    """Latencies (s) of the requests answered 200 within ``seconds``, and the failures."""
    latencies: list[float] = []
    failures = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client() -> None:
        with httpx.Client(timeout=120) as http:
            while time.monotonic() < stop:
                start = time.perf_counter()
                response = http.post(f"{url}/predict", content=image)
                elapsed = time.perf_counter() - start
                with lock:
                    if response.status_code == 200:
                        latencies.append(elapsed)
                    else:
                        failures[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return latencies, failures[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="segformer-b0")
    parser.add_argument("--size", type=int, nargs=2, default=(512, 512), metavar=("H", "W"))
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--threads", type=int, default=2, help="OMP threads of the server")
    parser.add_argument("--backends", nargs="+", default=["eager", "onnx"], choices=["auto", "eager", "onnx"])
    parser.add_argument("--int8", type=Path, default=None, help="also serve this INT8 file (`export --int8`)")
    args = parser.parse_args()
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (*args.size, 3), dtype=np.uint8)).save(buffer, format="PNG")
    image = buffer.getvalue()
    table = Table(title=f"transeg serve, {args.model} at {args.size[0]}x{args.size[1]}, {args.clients} clients "
                        f"x {args.seconds:g} s, {args.threads} threads")
    for column in ("backend", "requests", "failed", "req/s", "p50 ms", "p99 ms", "largest batch"):
        table.add_column(column, justify="right")
    runs = [(args.model, backend) for backend in args.backends] + ([(str(args.int8), "int8")] if args.int8 else [])
    for model, backend in runs:
        process, url = _start(model, backend, args.threads)
        try:
            _load(url, image, 1, 2.0)  # warm-up
            latencies, failed = _load(url, image, args.clients, args.seconds)
            largest = httpx.get(f"{url}/health").json()["largest_batch"]
        finally:
            process.terminate()
            process.wait(timeout=30)
        ms = np.asarray(latencies) * 1000
        table.add_row(backend, str(len(ms)), str(failed), f"{len(ms) / args.seconds:.2f}",
                      f"{np.percentile(ms, 50):.0f}", f"{np.percentile(ms, 99):.0f}", str(largest))
    Console().print(table)


if __name__ == "__main__":
    main()
