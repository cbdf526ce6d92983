"""Tiered mosaics: choose the images (plan), combine them (build), check the result (QA).

A mosaic is named ``results/mosaics/{tier}/{name}.fits``. The tier (quicklook,
science, deep; config ``mosaic.tiers``) sets how images are chosen, the grid
and the resources; the name says which part of the data it covers:

* ``YYYY-MM-DD``: the observations that started in that UTC day;
* ``YYYY-MM-DDTHH``: those that started in that UTC hour;
* ``latest``: those of the tier's ``window_h`` hours up to the newest observation;
* a region of ``mosaic.regions``: those whose pointing centre lies in its RA/Dec
  box (and within its optional start/end times).

**Plan** (two halves). At parse time, :class:`GroupIndex` and
:func:`selection_for` turn a name into a time window and/or a region, and
:meth:`GroupIndex.candidates` picks the observation groups that may belong to
it from their names alone (time from the group id; sky position from the
meridian at the group's mid time, with a margin). Their images are the plan
rule's inputs, so a new observation of that day or region changes that plan's
inputs, and only that mosaic is rebuilt. At run time, :func:`make_plan` reads
each candidate's QA sidecar and FITS header and keeps an image only if it is
in the window and region (exact ICRS centre), has an accepted grade and a
finite rms under the tier's cuts (absolute, and relative to the median of the
candidates), and then at most ``max_images`` of them (``keep``: newest, lowest
rms, or spread evenly in time). Every image left out is listed with its reason.
The plan also fixes the output grid (:class:`Grid`), so it holds everything the
build needs. Its JSON holds no time stamp: re-planning the same inputs writes
the same bytes, and Snakemake (which checksums small inputs) does not rebuild.

**Build** (:func:`build`): a primary-beam-weighted linear mosaic. For images
i with restored (apparent, not beam-corrected) image I_i, primary beam B_i and
noise sigma_i, each output pixel p is

    M(p) = sum_i B_i(p) I_i(p) / sigma_i^2  /  sum_i B_i(p)^2 / sigma_i^2,

which is the inverse-variance weighted mean of the corrected images I_i / B_i
(whose noise is sigma_i / B_i, hence weights B_i^2 / sigma_i^2). The noise map
is sigma_M(p) = (sum_i B_i^2 / sigma_i^2)^(-1/2) and the weights map is the
denominator. Pixels where an image's beam is below the tier's ``pb_cutoff``,
or where its image or beam is NaN, take no part (near a NaN region, a margin
of the interpolation kernel's width is left out too). Images are reprojected
one at a time with :func:`reproject.reproject_interp` onto the part of the
output grid they cover and added into running sums, so memory is that of the
output grid (18 bytes a pixel) plus one input, whatever the number of inputs.

**QA** (:func:`measure_qa`): noise (median of the noise map, its uniformity,
and the measured noise of the signal-to-noise map, which should be 1), peak
and dynamic range, and, from the sources found above ``detect_sigma`` and
cross-matched with a reference catalogue, the median position offset and the
median flux ratio (restoring-beam fits, the beam smoothed as the reprojection
smooths it; the free-shape integral recorded beside it); a grade; and a PNG preview (:func:`render_preview`).
"""

from __future__ import annotations

import logging

log = logging.getLogger("dsa110_contimg")

PLAN_VERSION = 1
#: Names that are not regions.
RESERVED_NAMES = ("latest", "daily", "hourly", "regions")
#: Interpolation orders of :func:`reproject.reproject_interp`, and how many input
#: pixels from a blank (NaN or below the beam cut-off) each one is unreliable.
INTERPOLATION_MARGIN = {"bilinear": 1, "bicubic": 4}
#: Bytes of working memory per output pixel (two float64 sums, a uint16 count).
BYTES_PER_OUTPUT_PIXEL = 18
#: Bytes of working memory per input pixel while one image is added (image, beam,
#: masks and the weighted planes), and per output pixel it is reprojected onto
#: (the three reprojected planes and reproject's coordinate maps; bicubic
#: interpolation needs more). Measured peaks (estimate): a full-size 5600^2 image at
#: 3.1 arcsec onto 3 / 6 (bicubic) / 12 arcsec grids, 4063 / 1333 / 739 MB (5285 /
#: 2316 / 1415); 10 images of 2048^2 onto an 8 arcsec grid, bicubic, 949 MB (1088);
#: a 2400^2 image onto its own 3 arcsec grid, 833 MB (1090; tests/test_mosaic.py).
BYTES_PER_INPUT_PIXEL = 32
BYTES_PER_REPROJECTED_PIXEL = {"bilinear": 112, "bicubic": 128}
#: Bytes of the Python process before any array (interpreter, numpy, astropy, reproject).
BASE_MEMORY_MB = 200
#: Widest grid (deg from its centre to a corner) each projection is used for.
MAX_RADIUS_DEG = {"TAN": 60.0, "SIN": 80.0}
#: Catalogue fluxes are at this frequency (spectral index scales them).
CATALOGUE_FREQ_HZ = 1.4e9

_DAY = "%Y-%m-%d"
_HOUR = "%Y-%m-%dT%H"


class MosaicError(ValueError):
    """A mosaic that cannot be planned or built; the message says which and why."""

