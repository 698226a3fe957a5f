"""Whether a dataset labels anything: a run whose every pixel is ignored stops instead of learning nothing."""

from __future__ import annotations

from transeg.data.datasets import SegmentationDataset
from transeg.errors import TransegError


def require_labelled_pixels(dataset: SegmentationDataset, on_bad_sample: str = "error") -> None:
    """Return at the first label map of ``dataset`` with a pixel of a class; a TransegError when no
    map has one (every value is the ignore value, or is mapped to it by the label table).

    Label maps are read and checked as in training (``SegmentationDataset.load_label``); a bad one
    stops the scan with its error, or is passed over when ``on_bad_sample`` is "skip".
    """
    for index in range(len(dataset)):
        try:
            label = dataset.load_label(index)
        except TransegError:
            if on_bad_sample == "error":
                raise
            continue
        if label is not None and (label != dataset.ignore_index).any():
            return
    raise TransegError(
        f"{dataset.name}: no pixel of its {len(dataset)} label maps is labelled (every value is the ignore "
        f"value {dataset.ignore_index} or is mapped to it), so training would learn nothing; check the "
        "label maps and the dataset options (reduce_zero_label), e.g. with `transeg data check`"
    )
