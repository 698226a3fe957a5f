"""``transeg serve``: a model behind HTTP, with micro-batching and a web page.

``app`` builds the FastAPI application, ``batching`` groups concurrent requests into model batches,
``rle`` encodes label maps as COCO run-length masks, ``static/`` holds the page served at ``/``.
"""
