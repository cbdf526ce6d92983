"""Images as the pipeline keeps them: tile-compressed within 1/16 of the noise, PSFs cropped
with their WCS intact, and the readers of every later stage reading either form."""

from __future__ import annotations

import numpy as np
import pytest
from astropy.io import fits
from astropy.wcs import WCS

from dsa110_contimg import fitsimage
from dsa110_contimg.mosaic.build import read_plane
from dsa110_contimg.photometry.forced import read_fits_image


def _image(path, data):
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---SIN", "DEC--SIN"]
    w.wcs.crval = [202.78, 30.5]
    w.wcs.crpix = [data.shape[1] / 2 + 1, data.shape[0] / 2 + 1]
    w.wcs.cdelt = [-3 / 3600, 3 / 3600]
    header = w.to_header()
    header["BMAJ"], header["BUNIT"] = 0.01, "Jy/beam"
    fits.PrimaryHDU(data.astype(np.float32), header).writeto(path)
    return w


def test_compressed_images_keep_noise_sources_and_headers(tmp_path):
    rng = np.random.default_rng(3)
    sigma = 1e-3
    data = rng.normal(0, sigma, (512, 512))
    data[200, 300] += 2.5  # a bright source: dynamic range 2500
    data[100, 100] += 0.05  # a faint one: 50 sigma
    plain = tmp_path / "plain.fits"
    _image(plain, data)
    packed = tmp_path / "packed.fits"
    packed.write_bytes(plain.read_bytes())
    fitsimage.compress(packed, fitsimage.QUANTIZE["image"])
    assert packed.stat().st_size < plain.stat().st_size / 4
    back, wcs, header = read_fits_image(packed)
    err = back - data
    # Quantised at sigma/16 with dithering: the error is ~sigma/16/sqrt(12), unbiased, sources intact.
    assert np.std(err) < sigma / 16 / np.sqrt(12) * 1.3 and abs(np.mean(err)) < sigma / 1000
    assert back[200, 300] == pytest.approx(data[200, 300], abs=sigma / 10)
    assert back[100, 100] == pytest.approx(data[100, 100], abs=sigma / 10)
    assert header["BMAJ"] == 0.01 and wcs.wcs.crval[1] == pytest.approx(30.5)
    assert fitsimage.read_header(packed)["BUNIT"] == "Jy/beam"
    plane, _, _ = read_plane(packed)
    np.testing.assert_array_equal(plane, back)


def test_primary_beam_is_kept_to_its_step_and_psf_crop_keeps_the_wcs(tmp_path):
    y, x = np.mgrid[:400, :400]
    beam = np.exp(-((x - 200.0) ** 2 + (y - 200.0) ** 2) / (2 * 120.0**2))
    path = tmp_path / "pb.fits"
    _image(path, beam)
    fitsimage.compress(path, fitsimage.QUANTIZE["pb"])
    back, _, _ = read_fits_image(path)
    assert np.max(np.abs(back - beam)) <= 1e-4 / 2 * 1.01
    psf = tmp_path / "psf.fits"
    w = _image(psf, beam)
    centre = w.pixel_to_world(200, 200)
    fitsimage.crop_centre(psf, 64)
    cropped, wcs, _ = read_fits_image(psf)
    assert cropped.shape == (64, 64)
    cy, cx = np.unravel_index(np.argmax(cropped), cropped.shape)
    assert wcs.pixel_to_world(cx, cy).separation(centre).arcsec < 1e-6
