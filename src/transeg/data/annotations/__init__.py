"""Annotation exports of labelling tools (COCO, CVAT, LabelMe, Label Studio, VOC palette PNGs) in and
out: one module per tool, the RLE codecs and the polygon rasteriser they share, and the writer of
transeg's ``images/{split}/`` + ``labels/{split}/`` + ``classes.yaml`` folder layout."""
