"""How much rule apply_calibration may average an observation before it is imaged.

The image will cover the primary beam out to ``imaging.pb_cutoff``
(:mod:`dsa110_contimg.imaging.field`); averaging must not cost more than the
smearing budget (``calibration.smearing_budget``, 1% of a point source's peak)
at that edge, in the worst direction, with the imaging weights the imager will
use (:mod:`dsa110_contimg.imaging.smearing`). When the image corrects smearing
(``imaging.smearing_correction``) the budget bounds the error left after the
correction, ``calibration.smearing_model_error`` times the loss. Input: plain arrays of the
uncalibrated MS's metadata (no flags, no data), so the plan costs a fraction
of a second; frequencies are sampled at ``n_freq`` points across the band for
the Briggs weights and the fringe rates.
"""

from __future__ import annotations

import numpy as np

from . import field as fieldsize
from . import smearing

C_M_S = 299792458.0
ARCSEC = np.pi / 180 / 3600


def plan_for_observation(
    uvw_m: np.ndarray,
    time_mjd_s: np.ndarray,
    freq_hz: np.ndarray,
    chan_width_hz: float,
    integration_s: float,
    field_ra_rad: float,
    field_dec_rad: float,
    imaging: dict,
    budget: float,
    channels: int | None = None,
    integrations: int | None = None,
    n_freq: int = 4,
    model_error: float = 1.0,
) -> smearing.AveragingPlan:
    """The averaging plan of one observation: cross-correlation rows ``uvw_m`` (N, 3) at ``time_mjd_s`` (N,).

    ``imaging`` is the config's imaging section (pb_cutoff, pixels_per_beam,
    cell_arcsec, weighting, robust, smearing_correction); ``channels`` / ``integrations`` fix a factor.
    When the image corrects smearing (``imaging["smearing_correction"]``), ``model_error`` is the fraction
    of the loss the correction may get wrong and the budget bounds that residual (:mod:`dsa110_contimg.imaging.smearing`).
    """
    from . import primary_beam

    freq_hz = np.asarray(freq_hz, float)
    times = np.unique(time_mjd_s)
    jd = times / 86400.0 + 2400000.5
    mid = float(jd.mean())
    dec_app = primary_beam.pointing_declination(field_ra_rad, field_dec_rad, mid)
    pointing = primary_beam.make_pointing(jd, freq_hz, np.ones((jd.size, freq_hz.size)), dec_app)
    half = fieldsize.beam_half_width_rad(pointing, field_ra_rad, field_dec_rad, imaging["pb_cutoff"])
    bmax = float(np.hypot(uvw_m[:, 0], uvw_m[:, 1]).max())
    size = fieldsize.field_size(half, float(freq_hz.max()), bmax, imaging["pixels_per_beam"],
                                cell=imaging.get("cell_arcsec"))
    # Samples: every row at n_freq frequencies spread over the band.
    f = np.quantile(freq_hz, (np.arange(n_freq) + 0.5) / n_freq)
    uvw_s = np.repeat(uvw_m, n_freq, axis=0)
    f_s = np.tile(f, uvw_m.shape[0])
    w = np.ones(f_s.size)
    if imaging.get("weighting", "briggs") == "briggs":
        uv_l = uvw_s[:, :2] * (f_s / C_M_S)[:, None]
        w = smearing.briggs_weights(uv_l, w, size.cell_arcsec * ARCSEC, size.imsize, imaging.get("robust", 0.0))
    elif imaging.get("weighting") == "uniform":
        raise ValueError("the smearing budget supports natural and Briggs weighting; fix the averaging by hand")
    return smearing.plan_averaging(
        uvw_s, w, f_s, field_dec_rad, half, chan_width_hz, integration_s, freq_hz.size, times.size, budget,
        channels=channels, integrations=integrations,
        correction=imaging["smearing_correction"], model_error=model_error,
    )
