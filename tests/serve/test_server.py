"""The real server (uvicorn in a subprocess): answers identical to ``transeg predict``, concurrent clients
batched and all answered correctly, bad uploads refused in one JSON line while good ones keep working."""

from __future__ import annotations

import io
import struct
import threading
import zlib

import httpx
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image
from pycocotools import mask as coco_mask

from transeg.cli import cli

# pycocotools (2.0.x) decodes through a NumPy 1 array interface
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _post(server, name: str, fmt: str = "png", **kwargs) -> httpx.Response:
    path = server.images[name]
    files = {"image": (path.name, path.read_bytes(), "image/png")}
    return httpx.post(f"{server.url}/predict", params={"format": fmt}, files=files, timeout=60, **kwargs)


def _labels(response: httpx.Response) -> np.ndarray:
    assert response.status_code == 200, response.text
    return np.asarray(Image.open(io.BytesIO(response.content)))


@pytest.fixture(scope="module")
def predicted(server, tmp_path_factory):
    """``transeg predict`` (eager) on the server's checkpoint and images: {name: (label PNG, overlay JPEG)}."""
    out = tmp_path_factory.mktemp("predict")
    result = CliRunner().invoke(cli, ["predict", str(server.model), *map(str, server.images.values()), "--out",
                                      str(out), "--backend", "eager"])
    assert result.exit_code == 0, result.output
    return {name: (Image.open(out / f"{path.stem}.png"), Image.open(out / f"{path.stem}_overlay.jpg"))
            for name, path in server.images.items()}


def test_label_png_and_overlay_are_those_of_predict(server, predicted):
    for name in server.images:
        label_png, overlay_jpg = predicted[name]
        served = Image.open(io.BytesIO(_post(server, name).content))
        assert served.mode == label_png.mode == "P"
        assert np.array_equal(np.asarray(served), np.asarray(label_png)), name
        assert served.getpalette() == label_png.getpalette()
        overlay = _post(server, name, "overlay")
        assert overlay.headers["content-type"] == "image/jpeg"
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(overlay.content))), np.asarray(overlay_jpg)), name
        assert overlay_jpg.width > label_png.width  # both with the class legend beside the overlay
        plain = httpx.post(f"{server.url}/predict", params={"format": "overlay", "legend": "0"},
                           files={"image": (name, server.images[name].read_bytes(), "image/png")}, timeout=60)
        assert Image.open(io.BytesIO(plain.content)).size == label_png.size, name


def test_raw_body_gives_the_same_labels_as_multipart(server, predicted):
    response = httpx.post(f"{server.url}/predict", content=server.images["wide"].read_bytes(), timeout=60)
    assert np.array_equal(_labels(response), np.asarray(predicted["wide"][0]))


def test_json_rle_decodes_with_pycocotools_to_the_label_map(server, predicted):
    labels = np.asarray(predicted["square"][0])
    body = _post(server, "square", "json").json()
    assert body["size"] == list(labels.shape)
    assert [c["id"] for c in body["classes"]] == sorted(np.unique(labels).tolist())
    for entry in body["classes"]:
        rle = {"size": entry["rle"]["size"], "counts": entry["rle"]["counts"].encode()}
        decoded = coco_mask.decode(rle)
        assert np.array_equal(decoded.astype(bool), labels == entry["id"])
        assert entry["pixels"] == int((labels == entry["id"]).sum())
        assert entry["rle"]["counts"] == coco_mask.encode(np.asfortranarray(labels == entry["id"]))["counts"].decode()


def test_metadata_and_health(server):
    meta = httpx.get(f"{server.url}/metadata").json()
    assert meta["model"] == "segformer-b0" and meta["backend"] == "eager" and meta["device"] == "cpu"
    assert len(meta["classes"]) == len(meta["palette"]) == 5
    assert meta["limits"]["max_bytes"] == 2**20 and meta["limits"]["max_pixels"] == 1_000_000
    assert httpx.get(f"{server.url}/health").json()["status"] == "ok"


def test_sixteen_concurrent_clients_are_batched_and_all_answered_correctly(server, predicted):
    names = ["wide", "square", "wide", "thin"] * 4
    barrier = threading.Barrier(len(names))
    answers: dict[int, httpx.Response] = {}

    def client(i: int) -> None:
        barrier.wait()
        answers[i] = _post(server, names[i])

    before = httpx.get(f"{server.url}/health").json()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(names))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, name in enumerate(names):
        assert np.array_equal(_labels(answers[i]), np.asarray(predicted[name][0])), (i, name)
    after = httpx.get(f"{server.url}/health").json()
    assert after["images"] - before["images"] == len(names)
    assert after["largest_batch"] > 1, after
    assert after["batches"] - before["batches"] < len(names), after


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR declaring ``width`` x ``height`` RGB, with one tiny IDAT: huge, and cheap to send."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def test_bad_uploads_get_one_json_line_and_good_ones_keep_working(server, predicted):
    good = server.images["wide"].read_bytes()
    cases = {
        "not an image": ({"files": {"image": ("a.txt", b"hello, world", "text/plain")}}, 400, "not an image format"),
        "truncated": ({"files": {"image": ("t.png", good[: len(good) // 2], "image/png")}}, 400, "cannot read"),
        "empty field": ({"files": {"image": ("e.png", b"", "image/png")}}, 400, "empty"),
        "empty body": ({"content": b""}, 400, "empty"),
        "huge dimensions": ({"files": {"image": ("h.png", _png_header_only(5000, 5000), "image/png")}}, 413,
                            "5000x5000 (25000000 pixels), over the limit of 1000000 pixels"),
        "bomb dimensions": ({"files": {"image": ("b.png", _png_header_only(60000, 60000), "image/png")}}, 413,
                            "over the limit of 1000000 pixels"),
        "wrong field": ({"files": {"picture": ("a.png", good, "image/png")}}, 400, "no multipart field 'image'"),
        "text field": ({"data": {"image": "not a file"}, "files": {"other": ("x", b"x")}}, 400, "must be a file"),
        "too many bytes": ({"content": b"\0" * (2**20 + 1)}, 413, "over the limit"),
        "bad format": ({"files": {"image": ("a.png", good)}, "params": {"format": "gif"}}, 400, "unknown format"),
        "bad alpha": ({"files": {"image": ("a.png", good)}, "params": {"format": "overlay", "alpha": "2"}}, 400,
                      "alpha"),
        "bad legend": ({"files": {"image": ("a.png", good)}, "params": {"format": "overlay", "legend": "maybe"}},
                       400, "legend must be one of"),
        "broken multipart": ({"content": b"--x\r\nnonsense", "headers": {"content-type": "multipart/form-data"}},
                             400, "multipart"),
    }
    for case, (kwargs, status, words) in cases.items():
        response = httpx.post(f"{server.url}/predict", timeout=60, **kwargs)
        assert response.status_code == status, (case, response.status_code, response.text)
        assert response.headers["content-type"] == "application/json", case
        assert "\n" not in response.text and words in response.json()["error"], (case, response.text)
        assert np.array_equal(_labels(_post(server, "wide")), np.asarray(predicted["wide"][0])), case
    assert httpx.get(f"{server.url}/nowhere").json() == {"error": "Not Found"}
    assert "Traceback" not in server.log.read_text()
