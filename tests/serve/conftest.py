"""A real ``transeg serve`` on 127.0.0.1 (uvicorn in a subprocess) for the server and page tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

import transeg

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Server:
    url: str
    model: Path  # the checkpoint it serves
    images: dict[str, Path]  # test images by name
    log: Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_images(folder: Path) -> dict[str, Path]:
    """Random RGB images of three sizes (one below MiT's 29-pixel minimum side) and a greyscale one."""
    rng = np.random.default_rng(0)
    shapes = {"wide": (48, 80, 3), "square": (64, 64, 3), "thin": (12, 40, 3), "grey": (40, 56)}
    paths = {}
    for name, shape in shapes.items():
        paths[name] = folder / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(paths[name])
    return paths


@pytest.fixture(scope="session")
def server(tmp_path_factory) -> Server:
    """segformer-b0 with 5 classes and seed-0 random weights, saved and served with --backend eager."""
    folder = tmp_path_factory.mktemp("serve")
    torch.manual_seed(0)
    model = transeg.save_model(transeg.create_model("segformer-b0", num_classes=5), folder / "model.safetensors")
    images = write_images(folder)
    port = free_port()
    log = folder / "server.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "transeg", "serve", str(model), "--port", str(port), "--backend", "eager",
               "--batch-window", "30", "--max-mb", "1", "--max-pixels", "1000000"]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not start in 120 s: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield Server(url, model, images, log)
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
