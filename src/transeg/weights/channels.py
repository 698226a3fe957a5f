"""Pretrained RGB input convolutions adapted to N-band inputs.

Band j of N takes the pretrained weights of RGB channel ``j % 3``, divided by how many bands share
that channel (N >= 3: the weights repeated and rescaled, by exactly 3/N when 3 divides N); for
N < 3, band j sums the RGB channels ``c`` with ``c % N == j``. Either way the weights summed over
the input channels are unchanged, so an image of one constant value in every band gives the
embedding the pretrained model gives the same constant in R, G and B.
"""

from __future__ import annotations

import torch


def adapt_input_conv(weight: torch.Tensor, bands: int) -> torch.Tensor:
    """(O, 3, kh, kw) pretrained RGB weights -> (O, bands, kh, kw) (see the module docstring)."""
    rgb = weight.shape[1]
    if bands == rgb:
        return weight
    if bands < rgb:
        return torch.stack([weight[:, j::bands].sum(1) for j in range(bands)], dim=1)
    source = torch.arange(bands) % rgb
    copies = torch.bincount(source, minlength=rgb).to(weight.dtype)
    return weight[:, source] / copies[source].view(1, bands, 1, 1)


def adapt_input_convs(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor],
                      bands: int) -> dict[str, torch.Tensor]:
    """``state`` (an RGB encoder's) with every 4-D weight the model ``expected`` to read ``bands``
    input channels instead of 3 (its input convolution) adapted; other entries unchanged."""
    adapted = dict(state)
    for key, value in state.items():
        target = expected.get(key)
        if (target is not None and value.ndim == 4 and value.shape[1] == 3 and target.shape[1] == bands
                and value.shape[0] == target.shape[0] and value.shape[2:] == target.shape[2:]):
            adapted[key] = adapt_input_conv(value, bands)
    return adapted
