"""The HTTP service: ``POST /predict``, ``GET /health``, ``GET /metadata`` and the page at ``/``.

Every failure is a JSON ``{"error": "<one line>"}``: 4xx for what the request got wrong (400 not an
image or no ``image`` field, 413 too many bytes or pixels, 422 refused by the model),
503 when the queue is full, 504 past the timeout.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from importlib.resources import files

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser

from transeg.data.annotations.rle import encode_mask
from transeg.data.images import ImageTooLarge, decode_image, label_image
from transeg.data.labels import default_palette
from transeg.errors import TransegError, one_line
from transeg.inference.backends import InferenceModel
from transeg.serve.batching import MicroBatcher, QueueFull
from transeg.serve.runner import LabelRunner
from transeg.viz import legend_names, overlay_with_legend

FORMATS = ("png", "json", "overlay")
LEGEND_VALUES = {"1": True, "true": True, "0": False, "false": False}
STATIC = files("transeg.serve") / "static"


@dataclass(frozen=True)
class Limits:
    """What one request may ask and how requests are batched."""

    max_bytes: int = 20 * 2**20  # request body
    max_pixels: int = 4096 * 4096  # per image, read from its header before decoding
    max_batch: int = 8  # images per model call
    batch_window_ms: float = 5.0  # how long the first request of a batch waits for others
    queue_size: int = 64  # requests waiting at most; more get 503
    timeout_s: float = 60.0  # from queueing to labels; past it 504


class RequestError(Exception):
    """A request refused with ``status`` and a one-line ``message``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": one_line(Exception(message))}, status_code=status)


async def _read_body(request: Request, max_bytes: int) -> bytes:
    """The body, refused (413) past ``max_bytes`` by its declared length or as it streams in."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise RequestError(413, f"the request is {int(declared)} bytes, over the limit of {max_bytes} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise RequestError(413, f"the request is over the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _image_bytes(request: Request, body: bytes) -> tuple[bytes, str]:
    """The encoded image and its name: multipart field ``image``, else the raw body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "multipart/form-data":  # whatever it declares (curl --data-binary says a form), the bytes
        return body, "the request body"

    async def stream() -> AsyncIterator[bytes]:
        yield body

    try:
        form = await MultiPartParser(request.headers, stream(), max_files=4, max_fields=16).parse()
    except MultiPartException as exc:
        raise RequestError(400, f"malformed multipart body: {exc.message}") from None
    field = form.get("image")
    if field is None:
        sent = ", ".join(repr(key) for key in form) or "none"
        raise RequestError(400, f"no multipart field 'image' (fields sent: {sent})")
    if not isinstance(field, UploadFile):
        raise RequestError(400, "multipart field 'image' must be a file, not text")
    return await field.read(), f"field 'image' ({field.filename or 'unnamed'})"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image)).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


class Service:
    """The model, its classes and palette, the batcher and the limits behind the routes."""

    def __init__(self, model: InferenceModel, name: str, backend: str, device: str, limits: Limits) -> None:
        self.name, self.backend, self.device, self.limits = name, backend, device, limits
        k = model.num_classes
        config = model.config
        self.palette = (np.asarray(config.palette, np.uint8) if config.palette
                        else default_palette(max(k, 2)))
        self.classes = legend_names(config.class_names, max(k, 2))
        self.batcher = MicroBatcher(LabelRunner(model, device), limits.max_batch, limits.batch_window_ms / 1000,
                                    limits.queue_size)

    def metadata(self) -> dict[str, object]:
        return {"model": self.name, "backend": self.backend, "device": self.device, "classes": self.classes,
                "palette": self.palette.tolist(), "limits": asdict(self.limits), "formats": list(FORMATS)}

    def health(self) -> dict[str, object]:
        stats = self.batcher.stats
        return {"status": "ok", "waiting": self.batcher.waiting, "batches": stats.batches, "images": stats.images,
                "largest_batch": stats.largest, "batch_sizes": {str(k): v for k, v in sorted(stats.sizes.items())}}

    async def labels(self, image: np.ndarray) -> np.ndarray:
        """The label map of ``image``, through the batcher, within the timeout."""
        try:
            return await asyncio.wait_for(self.batcher.submit(image), self.limits.timeout_s)
        except QueueFull as exc:
            raise RequestError(503, f"{exc}; retry later") from None
        except TimeoutError:
            raise RequestError(504, f"no answer within the timeout of {self.limits.timeout_s:g} s") from None
        except TransegError as exc:
            raise RequestError(422, one_line(exc)) from None

    def render(self, image: np.ndarray, labels: np.ndarray, fmt: str, alpha: float, legend: bool = True) -> Response:
        """The answer in ``fmt``; the PNG carries the classes present in header ``X-Transeg-Classes``; the
        overlay is ``predict``'s, with the class legend beside it unless ``legend`` is false."""
        present = [int(k) for k in np.unique(labels)]
        if fmt == "json":
            classes = [{"id": k, "name": self.classes[k] if k < len(self.classes) else f"class {k}",
                        "pixels": int((labels == k).sum()), "rle": encode_mask(labels == k)} for k in present]
            return JSONResponse({"model": self.name, "size": list(labels.shape), "classes": classes})
        if fmt == "overlay":
            picture = overlay_with_legend(image, labels, self.palette, self.classes, alpha=alpha, legend=legend)
            return Response(_jpeg(picture), media_type="image/jpeg")
        return Response(_png(label_image(labels, self.palette)), media_type="image/png",
                        headers={"X-Transeg-Classes": ",".join(map(str, present))})


def _query(request: Request) -> tuple[str, float, bool]:
    """``format``, ``alpha`` and ``legend`` (1/true or 0/false) from the query, checked."""
    fmt = request.query_params.get("format", "png")
    if fmt not in FORMATS:
        raise RequestError(400, f"unknown format {fmt!r} (use {', '.join(FORMATS)})")
    text = request.query_params.get("alpha", "0.5")
    try:
        alpha = float(text)
    except ValueError:
        alpha = -1.0
    if not 0.0 <= alpha <= 1.0:
        raise RequestError(400, f"alpha must be a number in [0, 1], got {text!r}")
    legend = request.query_params.get("legend", "1").lower()
    if legend not in LEGEND_VALUES:
        raise RequestError(400, f"legend must be one of {', '.join(LEGEND_VALUES)}, got {legend!r}")
    return fmt, alpha, LEGEND_VALUES[legend]


def create_app(model: InferenceModel, name: str, backend: str = "eager", device: str = "cpu",
               limits: Limits | None = None) -> FastAPI:
    """The FastAPI application serving ``model`` (already in its inference form, on ``device``)."""
    service = Service(model, name, backend, device, limits or Limits())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await service.batcher.start()
        yield
        await service.batcher.stop()

    app = FastAPI(title=f"transeg: {name}", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.service = service
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.exception_handler(RequestError)
    async def refused(request: Request, exc: RequestError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def failed(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error: {type(exc).__name__}: {exc}")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    @app.get("/health")
    async def health() -> dict[str, object]:
        return service.health()

    @app.get("/metadata")
    async def metadata() -> dict[str, object]:
        return service.metadata()

    @app.post("/predict")
    async def predict(request: Request) -> Response:
        fmt, alpha, legend = _query(request)
        data, source = await _image_bytes(request, await _read_body(request, service.limits.max_bytes))
        try:
            image = await run_in_threadpool(decode_image, data, source, service.limits.max_pixels)
        except ImageTooLarge as exc:
            raise RequestError(413, one_line(exc)) from None
        except TransegError as exc:
            raise RequestError(400, one_line(exc)) from None
        labels = await service.labels(image)
        return await run_in_threadpool(service.render, image, labels, fmt, alpha, legend)

    return app
