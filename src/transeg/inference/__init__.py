"""Inference: modes (whole / slide / ms-flip), backends behind one protocol, ONNX export, files in and out."""
