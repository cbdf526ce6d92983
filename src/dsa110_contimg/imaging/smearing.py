"""Bandwidth and time smearing, and how much averaging an image can afford.

Averaging visibilities over a box of bandwidth dnu and time tau multiplies
each visibility of a point source at (l, m) from the phase centre by

    sinc(dnu (u l + v m) / c) * sinc(tau f),    sinc(x) = sin(pi x) / (pi x),

(u, v, w in metres). The first factor is the phase's change across the
channel box, which does not depend on frequency when u is in metres; the
second is the fringe rate f of the source, which for an Earth-rotation
baseline is (Thompson, Moran & Swenson 2017, eq. 4.9)

    du/dt = omega (cos(dec) w - sin(dec) v),    dv/dt = omega sin(dec) u,
    f = (nu / c) omega [(cos(dec) w - sin(dec) v) l + sin(dec) u m],

with dec the phase centre's declination and omega the Earth's rotation rate.
The image's peak is the imaging-weighted mean of these factors, so the
fraction of the peak kept is

    R = sum_i w_i sinc_nu,i sinc_t,i / sum_i w_i.

For a Gaussian uv taper this reduces to Bridle & Schwab (1999, Synthesis
Imaging in Radio Astronomy II, eqs. 18-24 and 18-43): R = (sqrt(pi)/(2
sqrt(ln 2))) (theta_b / (beta theta)) erf(sqrt(ln 2) beta theta / theta_b) for
a fractional bandwidth beta at a distance theta (theta_b the FWHM of the
synthesised beam), and R = 1 - 1.2288710615e-9 (tau theta / theta_b)^2 for
time averaging at the pole; :func:`bandwidth_smearing_gaussian` and
:func:`time_smearing_gaussian_pole` give those formulas and the tests check
:func:`peak_fraction` against them.

Budget. Real data already carry the smearing of their own channel width and
integration time. Averaging m channels and k integrations turns the box into
m dnu x k tau, so the extra loss of the peak at the field's edge, in the worst
direction, is 1 - R(m dnu, k tau) / R(dnu, tau). The image stage corrects the
smearing (:mod:`dsa110_contimg.imaging.smearing_map`: the beam it divides by
is the primary beam times that extra factor, or times the total R), so what
averaging costs is no longer the loss but the error of that correction: the
budget bounds the *residual* error at the field's edge, taken as
``model_error`` times the loss corrected there (the extra loss, or the total
loss 1 - R(m dnu, k tau) when the image corrects the total). ``model_error``
(``calibration.smearing_model_error``) is the fraction of the loss the
correction may get wrong: R is the exact peak of the dirty image of a point
source, but a fit with the restoring beam's shape and CLEAN see a radially
stretched source (second order in the loss), averaged point samples (the
simulator's channels) follow a Dirichlet kernel rather than the box's sinc
(fourth order), and an extended source's integrated flux, which smearing
preserves, is raised by the correction by up to the loss. Without the
correction the budget bounds the extra loss itself, as before.
:func:`plan_averaging` picks the largest reduction m k within the budget (1%
by default), with m dividing the channels and k the integrations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

C_M_S = 299792458.0
SMEARING_CORRECTIONS = ("none", "averaging", "total")
OMEGA_EARTH = 7.2921150e-5  # rad/s, sidereal rotation rate


def bandwidth_smearing_gaussian(beta: float, theta: float, theta_b: float) -> float:
    """Bridle & Schwab 18-24: peak kept for a square bandpass (fractional width beta) and a Gaussian taper."""
    from scipy.special import erf

    x = np.sqrt(np.log(2)) * beta * theta / theta_b
    if x == 0:
        return 1.0
    return float(np.sqrt(np.pi) / (2 * x) * erf(x))


def time_smearing_gaussian_pole(tau_s: float, theta: float, theta_b: float) -> float:
    """Bridle & Schwab 18-43: peak kept after averaging ``tau_s`` at the pole (small smearing), Gaussian taper."""
    return float(1.0 - 1.2288710615e-9 * (tau_s * theta / theta_b) ** 2)


def fringe_rate_hz(uvw_m: np.ndarray, freq_hz, dec_rad: float, l: float, m: float) -> np.ndarray:  # noqa: E741
    """Fringe rate (Hz) of a source at (l, m) on baselines ``uvw_m`` (N, 3) at ``freq_hz`` (broadcast)."""
    u, v, w = uvw_m[..., 0], uvw_m[..., 1], uvw_m[..., 2]
    du = OMEGA_EARTH * (np.cos(dec_rad) * w - np.sin(dec_rad) * v)
    dv = OMEGA_EARTH * np.sin(dec_rad) * u
    return np.asarray(freq_hz) / C_M_S * (du * l + dv * m)


def peak_fraction(uvw_m: np.ndarray, weights: np.ndarray, freq_hz, dec_rad: float, l: float, m: float,  # noqa: E741
                  chan_width_hz: float, tau_s: float) -> float:
    """Fraction of a point source's peak at (l, m) kept after averaging over ``chan_width_hz`` x ``tau_s``.

    ``uvw_m`` (N, 3) in metres, ``weights`` (N,) imaging weights, ``freq_hz`` a
    scalar or (N,) frequency of each sample (it sets only the fringe rate).
    """
    uvw_m = np.asarray(uvw_m, float)
    a = np.sinc(chan_width_hz * (uvw_m[:, 0] * l + uvw_m[:, 1] * m) / C_M_S)
    b = np.sinc(tau_s * fringe_rate_hz(uvw_m, freq_hz, dec_rad, l, m))
    w = np.asarray(weights, float)
    return float(np.sum(w * a * b) / np.sum(w))


def _sinc32(x: np.ndarray) -> np.ndarray:
    """np.sinc in float32, in place on ``x`` (a third of np.sinc's time; 1e-7 is plenty for a mean)."""
    x *= np.float32(np.pi)
    zero = x == 0
    x[zero] = 1.0
    out = np.sin(x)
    out /= x
    out[zero] = 1.0
    return out


def response(uvw_m: np.ndarray, weights: np.ndarray, freq_hz, dec_rad: float, l, m,  # noqa: E741
             chan_width_hz, tau_s, native: tuple[float, float] | None = None) -> np.ndarray:
    """:func:`peak_fraction` at every direction of the arrays ``l``, ``m`` (same shape).

    ``freq_hz``, ``chan_width_hz`` and ``tau_s`` are scalars or (N,) arrays, one
    value per sample (an averaged MS says its channel width and integration time
    in CHAN_WIDTH and EXPOSURE). With ``native`` = (channels, integrations)
    averaged, the result is divided by the response of the channels and
    integrations before averaging (width / channels, time / integrations):
    what averaging added.
    """
    uvw_m = np.asarray(uvw_m, float)
    w = np.asarray(weights, float)
    keep = w > 0
    uvw_m, w = uvw_m[keep], (w[keep] / w[keep].sum()).astype(np.float32)
    freq, width, tau = (np.broadcast_to(np.asarray(x, float), keep.shape)[keep] for x in (freq_hz, chan_width_hz, tau_s))
    # Per sample: the bandwidth phase slope and the fringe rate x averaging time, per unit l and m.
    du = OMEGA_EARTH * (np.cos(dec_rad) * uvw_m[:, 2] - np.sin(dec_rad) * uvw_m[:, 1])
    dv = OMEGA_EARTH * np.sin(dec_rad) * uvw_m[:, 0]
    coef = np.stack([width * uvw_m[:, 0], width * uvw_m[:, 1], tau * freq * du, tau * freq * dv]) / C_M_S
    coef = coef.astype(np.float32)
    m_div, k_div = native if native is not None else (1, 1)
    l_arr, m_arr = np.broadcast_arrays(np.asarray(l, float), np.asarray(m, float))
    out = np.empty(l_arr.size)
    for i, (li, mi) in enumerate(zip(l_arr.ravel(), m_arr.ravel(), strict=True)):
        bw = coef[0] * np.float32(li) + coef[1] * np.float32(mi)
        rate = coef[2] * np.float32(li) + coef[3] * np.float32(mi)
        r = float(np.dot(w, _sinc32(bw.copy()) * _sinc32(rate.copy())))
        if native is not None:
            bw /= np.float32(m_div)
            rate /= np.float32(k_div)
            r /= float(np.dot(w, _sinc32(bw) * _sinc32(rate)))
        out[i] = r
    return out.reshape(l_arr.shape)


@dataclass(frozen=True)
class AveragingPlan:
    """How many channels and integrations to average, and the smearing that costs."""

    channels: int
    integrations: int
    extra_loss: float
    """1 - R(averaged) / R(native) at the field's edge, worst direction: what averaging costs."""
    native_loss: float
    """1 - R(native): what the data's own channel width and integration time cost there."""
    radius_deg: float
    budget: float
    total_loss: float = float("nan")
    """1 - R(averaged) at the field's edge, worst direction: what the image loses before correction."""
    residual: float = float("nan")
    """What the budget bounded: model_error x the loss the image corrects, or extra_loss uncorrected."""
    correction: str = "none"
    model_error: float | None = None

    def record(self) -> dict:
        return {"channels": self.channels, "integrations": self.integrations, "extra_loss": self.extra_loss,
                "native_loss": self.native_loss, "total_loss": self.total_loss, "residual": self.residual,
                "correction": self.correction, "model_error": self.model_error, "radius_deg": self.radius_deg, "budget": self.budget}


def divisors(n: int, limit: int | None = None) -> list[int]:
    """Divisors of ``n`` up to ``limit``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0 and (limit is None or d <= limit)]


def plan_averaging(uvw_m: np.ndarray, weights: np.ndarray, freq_hz, dec_rad: float, radius_rad: float,
                   chan_width_hz: float, tau_s: float, n_channels: int, n_integrations: int,
                   budget: float = 0.01, n_pa: int = 12, channels: int | None = None,
                   integrations: int | None = None, max_channels: int = 16,
                   max_integrations: int = 8, correction: str = "none",
                   model_error: float = 1.0) -> AveragingPlan:
    """The largest averaging (channels x integrations) whose error at ``radius_rad`` is <= ``budget``.

    The error (see the module docstring) is the extra peak loss (``correction``
    ``none``), or ``model_error`` times the extra loss (``averaging``) or the
    total loss (``total``) that the image corrects. It is evaluated at ``n_pa`` position angles over half a circle
    and the worst one counts. ``channels`` / ``integrations`` fix one factor (the
    other is then chosen); at most ``max_channels`` x ``max_integrations`` are
    considered. Ties go to more channels (frequency smearing is
    the same in every observation; time smearing grows with the hour angle).
    """
    if not 0 < budget < 1:
        raise ValueError(f"the smearing budget must be in (0, 1), got {budget}")
    if correction not in SMEARING_CORRECTIONS:
        raise ValueError(f"smearing correction must be one of {SMEARING_CORRECTIONS}, got {correction!r}")
    if not 0 < model_error <= 1:
        raise ValueError(f"the smearing model error must be in (0, 1], got {model_error}")
    uvw_m = np.asarray(uvw_m, float)
    w = np.asarray(weights, float)
    ms_ = divisors(n_channels, max_channels) if channels is None else [channels]
    ks = divisors(n_integrations, max_integrations) if integrations is None else [integrations]
    worst = np.ones((len(ms_), len(ks)))
    worst_total = np.ones((len(ms_), len(ks)))
    native = 1.0
    for pa in np.linspace(0.0, np.pi, n_pa, endpoint=False):
        l, m = radius_rad * np.sin(pa), radius_rad * np.cos(pa)  # noqa: E741
        proj = (uvw_m[:, 0] * l + uvw_m[:, 1] * m) / C_M_S
        rate = fringe_rate_hz(uvw_m, freq_hz, dec_rad, l, m)
        a = np.sinc(np.multiply.outer(np.asarray(ms_, float) * chan_width_hz, proj)) * w  # (M, N)
        b = np.sinc(np.multiply.outer(np.asarray(ks, float) * tau_s, rate))  # (K, N)
        r = a @ b.T / w.sum()
        r0 = float(np.sum(w * np.sinc(chan_width_hz * proj) * np.sinc(tau_s * rate)) / w.sum())
        native = min(native, r0)
        worst = np.minimum(worst, r / r0)
        worst_total = np.minimum(worst_total, r)
    loss = 1.0 - worst
    error = {"none": loss, "averaging": model_error * loss, "total": model_error * (1.0 - worst_total)}[correction]
    best = None
    for i, mm in enumerate(ms_):
        for j, kk in enumerate(ks):
            if error[i, j] <= budget and (best is None or (mm * kk, mm) > (ms_[best[0]] * ks[best[1]], ms_[best[0]])):
                best = (i, j)
    if best is None:  # reachable with a fixed factor (or native smearing) that alone exceeds the budget
        best = (0, 0)
    i, j = best
    return AveragingPlan(ms_[i], ks[j], max(float(loss[i, j]), 0.0), 1.0 - native, float(np.degrees(radius_rad)),
                         budget, total_loss=float(1.0 - worst_total[i, j]), residual=max(float(error[i, j]), 0.0),
                         correction=correction, model_error=model_error if correction != "none" else None)


def briggs_weights(uv_lambda: np.ndarray, natural: np.ndarray, cell_rad: float, imsize: int, robust: float) -> np.ndarray:
    """Briggs weights of samples at ``uv_lambda`` (N, 2) with natural weights ``natural`` (N,), as the imagers
    compute them: w / (1 + W_k f^2), f^2 = (5 10^-R)^2 / (sum_k W_k^2 / sum_i w_i), W_k the gridded natural
    weight (with the Hermitian conjugates) of the sample's uv cell."""
    du = 1.0 / (imsize * cell_rad)
    idx = []
    for sign in (1.0, -1.0):
        iu = np.rint(sign * uv_lambda[:, 0] / du).astype(np.int64) + imsize // 2
        iv = np.rint(sign * uv_lambda[:, 1] / du).astype(np.int64) + imsize // 2
        inside = (iu >= 0) & (iu < imsize) & (iv >= 0) & (iv < imsize)
        idx.append(np.where(inside, iv * imsize + iu, -1))
    density = np.zeros(imsize * imsize)
    for ix in idx:
        ok = ix >= 0
        density += np.bincount(ix[ok], weights=natural[ok], minlength=imsize * imsize)
    f2 = (5.0 * 10.0 ** (-robust)) ** 2 / (np.sum(density**2) / density.sum())
    dens = np.where(idx[0] >= 0, density[np.maximum(idx[0], 0)], 0.0)
    return np.where(idx[0] >= 0, natural / (1.0 + dens * f2), 0.0)
