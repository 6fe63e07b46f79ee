"""Image parametrisations (Lucid/lucent): FFT spectrum with 1/f scaling and colour decorrelation.

The maths is lucent's ``param.image`` (``fft_image`` + ``to_valid_rgb(decorrelate=True)``); the
difference is that the initial spectrum of every image is drawn from its own seeded generator, so an
image does not depend on which other images share its batch (lucent draws from torch's global RNG).
"""

from __future__ import annotations

import numpy as np
import torch
from lucent.optvis.param.color import color_correlation_normalized
from lucent.optvis.param.spatial import rfft2d_freqs

#: lucent's "magic" divisor of the FFT image (reduces saturation)
FFT_MAGIC = 4.0


class ImageParam(torch.nn.Module):
    """A batch of ``B`` images of ``size``×``size`` px, parametrised for optimisation.

    Call the module to get the images ``(B, 3, size, size)`` in (0, 1). ``inits`` holds one float32
    array per image (from :meth:`draw_init`), so each image's start is fixed by its own seed.
    """

    def __init__(self, inits: list[np.ndarray], size: int, fft: bool = True, decorrelate: bool = True) -> None:
        super().__init__()
        self.size = size
        self.fft = fft
        self.decorrelate = decorrelate
        self.data = torch.nn.Parameter(torch.from_numpy(np.stack(inits)).float())
        if fft:
            freqs = rfft2d_freqs(size, size)
            scale = 1.0 / np.maximum(freqs, 1.0 / size)
            self.register_buffer("scale", torch.tensor(scale, dtype=torch.float32)[None, None, ..., None])
        self.register_buffer("colour", torch.tensor(color_correlation_normalized.T, dtype=torch.float32))

    @staticmethod
    def shape(size: int, fft: bool = True) -> tuple[int, ...]:
        """Shape of one image's parameters (without the batch dimension)."""
        if fft:
            return (3, *rfft2d_freqs(size, size).shape, 2)
        return (3, size, size)

    @staticmethod
    def draw_init(rng: np.random.Generator, size: int, fft: bool = True, sd: float = 0.01) -> np.ndarray:
        """Initial parameters of one image: normal noise with standard deviation ``sd``."""
        return (rng.standard_normal(ImageParam.shape(size, fft)) * sd).astype(np.float32)

    def forward(self) -> torch.Tensor:
        """The images, ``(B, 3, size, size)`` in (0, 1)."""
        if self.fft:
            spectrum = torch.view_as_complex((self.scale * self.data).contiguous())
            image = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho") / FFT_MAGIC
        else:
            image = self.data
        if self.decorrelate:
            image = torch.einsum("bchw,cd->bdhw", image, self.colour)
        return torch.sigmoid(image)
