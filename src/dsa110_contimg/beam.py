"""Primary beam of a DSA-110 dish: the Airy pattern of a uniformly lit 4.65 m aperture."""

from __future__ import annotations

import numpy as np
from scipy.special import j1

from .constants import C_M_S
from .telescope import DISH_DIAMETER_M


def airy_power(theta_rad, freq_hz, diameter_m: float = DISH_DIAMETER_M) -> np.ndarray:
    """Power response (1 on axis) at angle ``theta_rad`` from the pointing centre.

    A(theta) = [2 J1(x) / x]^2 with x = pi D sin(theta) / lambda. Broadcasts over
    its arguments.
    """
    x = np.pi * diameter_m * np.sin(np.asarray(theta_rad)) * np.asarray(freq_hz) / C_M_S
    x = np.where(np.abs(x) < 1e-8, 1e-8, x)
    return (2.0 * j1(x) / x) ** 2


def fwhm_rad(freq_hz: float, diameter_m: float = DISH_DIAMETER_M) -> float:
    """Full width at half maximum of the Airy power pattern: 1.029 lambda / D."""
    return 1.02899 * C_M_S / freq_hz / diameter_m
