"""``transeg serve``: MODEL behind HTTP on uvicorn, with the web page at ``/``."""

from __future__ import annotations

import importlib.util
import socket

import click

from transeg.api import load_model
from transeg.cli.console import console
from transeg.cli.options import DEVICE_OPTION, num_classes_option
from transeg.cli.types import POSITIVE
from transeg.errors import TransegError
from transeg.inference.backends import InferenceModel, Int8Segmentor, optimize_for_inference, resolve_backend

# int8: MODEL is the file of `transeg export --int8` (quantising needs calibration images, so it is done there)
SERVE_BACKENDS = ("auto", "eager", "onnx", "int8")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host``:``port``, or a TransegError naming what is wrong."""
    try:
        info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(info[0], info[1], info[2])
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(info[4])
    except (OSError, UnicodeError, ValueError) as exc:
        raise TransegError(f"cannot listen on {host}:{port}: {exc}") from None
    return sock


@click.command("serve")
@click.argument("model")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--backend", type=click.Choice(SERVE_BACKENDS), default="auto", show_default=True,
              help="auto: ONNX Runtime on the CPU when the onnx extra is installed, else PyTorch eager; "
                   "int8: MODEL is an INT8 file of `transeg export --int8`.")
@DEVICE_OPTION
@num_classes_option()
@click.option("--max-batch", type=click.IntRange(1, 64), default=8, show_default=True,
              help="Images per model call.")
@click.option("--batch-window", type=click.FloatRange(0, 1000), default=5.0, show_default=True,
              help="Milliseconds a request waits for others to share its batch.")
@click.option("--queue-size", type=POSITIVE, default=64, show_default=True,
              help="Requests waiting at most; more are answered 503.")
@click.option("--max-mb", type=click.FloatRange(0.001, 1024), default=20.0, show_default=True,
              help="Largest request body, in MiB (413 beyond).")
@click.option("--max-pixels", type=click.IntRange(1, 2**28), default=4096 * 4096, show_default=True,
              help="Largest image, in pixels (413 beyond).")
@click.option("--timeout", type=click.FloatRange(0.1, 3600), default=60.0, show_default=True,
              help="Seconds a request may wait for its labels (504 beyond).")
def serve_command(model: str, host: str, port: int, backend: str, device: str, num_classes: int | None,
                  max_batch: int, batch_window: float, queue_size: int, max_mb: float, max_pixels: int,
                  timeout: float) -> None:
    """Serve MODEL over HTTP: POST /predict, GET /health, GET /metadata, and a web page at /."""
    missing = [name for name in ("fastapi", "uvicorn", "multipart") if importlib.util.find_spec(name) is None]
    if missing:
        raise TransegError(f"serve needs {', '.join(missing)}: pip install 'transeg[serve]'")
    import uvicorn

    from transeg.serve.app import Limits, create_app

    runner, concrete = _runner(model, backend, device, num_classes)
    sock = _bind(host, port)
    limits = Limits(int(max_mb * 2**20), max_pixels, max_batch, batch_window, queue_size, timeout)
    name = runner.config.name
    app = create_app(runner, name, concrete, device, limits)
    shown = f"[{host}]" if ":" in host else host
    console.print(f"serving {name} ({concrete} on {device}) at http://{shown}:{sock.getsockname()[1]}")
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])


def _runner(model: str, backend: str, device: str, num_classes: int | None) -> tuple[InferenceModel, str]:
    """The model to serve and its concrete backend: an INT8 file for ``int8``, else MODEL loaded and
    optimised for ``backend`` on ``device``."""
    if backend == "int8":
        if device != "cpu" or num_classes is not None:
            raise TransegError("--backend int8 serves an INT8 file as it is: on the CPU, without --num-classes")
        return Int8Segmentor(model), "int8"
    segmentor = load_model(model, num_classes).to(device)
    concrete = resolve_backend(segmentor, backend)  # type: ignore[arg-type]
    return optimize_for_inference(segmentor, concrete), concrete  # type: ignore[arg-type]
