"""FITS images as the pipeline keeps them: plain, or tile-compressed to bound the disk.

With ``retention.compress_images`` the image stage rewrites its products as
FITS tile-compressed images (an empty primary HDU, the image in extension 1;
astropy, DS9 and funpack read them as they are). The restored, residual and
beam-corrected images are quantised at 1/16 of each tile's noise, with
subtractive dithering (the standard fpack setting; the quantisation adds
1/16/sqrt(12) ~ 2% of the noise in quadrature, i.e. 0.02% to the rms, and no
bias); the primary beam, which has no noise, in absolute steps of 1e-4.
About 4.7x smaller for the images and 6x for the beam. Readers take the first
HDU that holds an image (:func:`image_hdu`), so both forms read the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

#: Quantisation per product kind: > 0 a fraction of the noise (1/q), < 0 an absolute step.
QUANTIZE = {"image": 16.0, "residual": 16.0, "pbcor": 16.0, "pb": -1e-4}


def image_hdu(hdul: Any) -> Any:
    """The first HDU of an open FITS file that holds an image (2 or more axes), or None."""
    return next((h for h in hdul if h.data is not None and h.data.ndim >= 2), None)


def read_header(path: str | os.PathLike) -> Any:
    """The header of a FITS file's image (plain or tile-compressed); ValueError when it has none."""
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdu = image_hdu(hdul)
        if hdu is None:
            raise ValueError(f"{os.fspath(path)}: no image in the FITS file")
        return hdu.header.copy()


def compress(path: str | os.PathLike, quantize_level: float) -> None:
    """Rewrite a plain FITS image at ``path`` tile-compressed (RICE), in place."""
    from astropy.io import fits

    path = Path(path)
    with fits.open(path) as hdul:
        hdu = image_hdu(hdul)
        if hdu is None:
            raise ValueError(f"{path}: no image to compress")
        data = np.asarray(hdu.data, dtype=np.float32)
        header = hdu.header.copy()
    tmp = path.with_name(path.name + ".z")
    comp = fits.CompImageHDU(data, header, compression_type="RICE_1", quantize_level=quantize_level,
                             quantize_method=1, dither_seed=1)  # SUBTRACTIVE_DITHER_1, reproducible
    fits.HDUList([fits.PrimaryHDU(), comp]).writeto(tmp, overwrite=True)
    os.replace(tmp, path)


def crop_centre(path: str | os.PathLike, size: int) -> None:
    """Keep the central ``size`` x ``size`` pixels of a plain FITS image (e.g. a PSF), in place,
    with the reference pixel moved so that the WCS still holds."""
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        hdu = image_hdu(hdul)
        ny, nx = hdu.data.shape[-2:]
        if ny <= size and nx <= size:
            return
        y0, x0 = max(0, (ny - size) // 2), max(0, (nx - size) // 2)
        hdu.data = np.ascontiguousarray(hdu.data[..., y0:y0 + min(size, ny), x0:x0 + min(size, nx)])
        hdu.header["CRPIX1"] -= x0
        hdu.header["CRPIX2"] -= y0
