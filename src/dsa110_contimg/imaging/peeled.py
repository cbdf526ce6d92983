"""Sources subtracted before imaging, put back into the restored image (see calibration.subtract).

apply_calibration removes bright catalogue sources from the visibilities
through the drifting beam, each with a flux factor fitted to the data, and
lists them in the calibrated MS's sidecar (``qa.subtract.sources``). Those
inside the imaged field (``restored``) come back here as exact points at their
catalogue positions, added to the restored image with the restoring beam.

Each is given the apparent flux a perfectly deconvolved constant source would
have in this image: its fitted spectrum times the drifting beam, averaged with
the imaging weights of every (integration, channel) as the primary-beam image
is, times the smearing response written into that beam. The corrected image
then reads the beam-weighted band average of the fitted spectrum, as it does
for every CLEANed source.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from .. import provenance
from ..calibration import skymodel, standards


def from_sidecar(ms: str) -> list[dict]:
    """The sources subtracted from ``ms`` to be restored in its image (none for an MS without a sidecar
    or a subtraction record)."""
    path = provenance.sidecar_path(ms)
    if not path.exists():
        return []
    record = (provenance.read_sidecar(path).get("qa") or {}).get("subtract") or {}
    return [s for s in record.get("sources", []) if s.get("restored")]


def apparent_fluxes(sources: Sequence[Mapping], jd: np.ndarray, freq_hz: np.ndarray, weights_tf: np.ndarray,
                    pointing_dec_app: float) -> np.ndarray:
    """Imaging-weighted mean of fitted flux x beam over integrations and channels (Jy), per source."""
    if "spectral_index" not in sources[0]:
        raise ValueError("the subtraction record lacks spectral_index: re-run apply_calibration for this MS")
    sky = pd.DataFrame({
        "name": [s["name"] for s in sources],
        "flux_jy": [s["catalogue_jy_1400"] * s["flux_factor"] for s in sources],
        "spectral_index": [s["spectral_index"] for s in sources],
        "flux_standard": [s.get("flux_standard") or "" for s in sources],
    })
    ra = np.radians([s["ra_deg"] for s in sources])
    dec = np.radians([s["dec_deg"] for s in sources])
    beam = skymodel.beam_track(jd, pointing_dec_app, ra, dec, freq_hz)  # (Nsrc, Nt, Nf)
    spec = standards.spectra(sky, freq_hz)  # (Nsrc, Nf)
    w = np.asarray(weights_tf, float)
    return np.einsum("stf,sf,tf->s", beam, spec, w) / w.sum()


def add_points(image: np.ndarray, wcs, beam: tuple[float, float, float], ra_deg, dec_deg, flux_jy,
               n_sigma: float = 6.0) -> np.ndarray:
    """Add points of ``flux_jy`` (Jy/beam peak) at exact (sub-pixel) positions, convolved with ``beam``
    (BMAJ, BMIN, BPA in degrees), to ``image`` in place; points off the image are skipped."""
    from .imager import beam_inverse_covariance

    ny, nx = image.shape
    xs, ys = wcs.all_world2pix(np.asarray(ra_deg, float), np.asarray(dec_deg, float), 0)
    for x, y, flux in zip(np.atleast_1d(xs), np.atleast_1d(ys), np.atleast_1d(flux_jy), strict=True):
        if not (np.isfinite(x) and np.isfinite(y) and -0.5 <= x < nx - 0.5 and -0.5 <= y < ny - 0.5):
            continue
        inv = beam_inverse_covariance(wcs, x, y, beam)
        half = int(np.ceil(n_sigma * np.sqrt(np.max(np.linalg.eigvalsh(np.linalg.inv(inv))))))
        x0, x1 = max(0, int(round(x)) - half), min(nx, int(round(x)) + half + 1)
        y0, y1 = max(0, int(round(y)) - half), min(ny, int(round(y)) + half + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1]
        dx, dy = xx - x, yy - y
        image[y0:y1, x0:x1] += flux * np.exp(-0.5 * (inv[0, 0] * dx * dx + 2 * inv[0, 1] * dx * dy
                                                     + inv[1, 1] * dy * dy))
    return image


def sample(image: np.ndarray, wcs, ra_deg, dec_deg) -> np.ndarray:
    """``image`` at sky positions (bilinear; NaN off the image)."""
    from scipy.ndimage import map_coordinates

    xs, ys = wcs.all_world2pix(np.asarray(ra_deg, float), np.asarray(dec_deg, float), 0)
    return map_coordinates(np.asarray(image, float), [np.atleast_1d(ys), np.atleast_1d(xs)], order=1,
                           mode="constant", cval=np.nan)


__all__ = ["add_points", "apparent_fluxes", "from_sidecar", "sample"]
