"""The page at ``/`` in a real headless Chromium (Playwright): upload, overlay, legend, opacity, download."""

from __future__ import annotations

import io
import os
import shutil

import httpx
import numpy as np
import pytest
from PIL import Image

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on this machine")
def test_page_overlays_the_labels_lists_the_classes_and_downloads_the_png(server, tmp_path):
    from playwright.sync_api import sync_playwright

    image = server.images["square"]
    expected = np.asarray(Image.open(io.BytesIO(httpx.post(f"{server.url}/predict", content=image.read_bytes(),
                                                           timeout=60).content)))
    meta = httpx.get(f"{server.url}/metadata").json()
    names = [meta["classes"][k] for k in np.unique(expected)]
    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page()
            page.goto(server.url)
            page.set_input_files("#file", str(image))
            page.wait_for_selector("#legend li", timeout=60_000)
            size = page.eval_on_selector("#labels", "img => img.complete && [img.naturalWidth, img.naturalHeight]")
            assert size == [expected.shape[1], expected.shape[0]]
            assert page.is_visible("#photo") and page.is_visible("#labels")
            assert page.locator("#legend li").all_inner_texts() == names
            opacity = "el => getComputedStyle(el).opacity"
            assert page.eval_on_selector("#labels", opacity) == "0.5"
            page.locator("#opacity").fill("80")
            assert page.eval_on_selector("#labels", opacity) == "0.8"
            with page.expect_download() as download:
                page.click("#download")
            saved = tmp_path / download.value.suggested_filename
            download.value.save_as(saved)
            assert saved.name == "square_labels.png"
            assert saved.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
            assert np.array_equal(np.asarray(Image.open(saved)), expected)
        finally:
            browser.close()
