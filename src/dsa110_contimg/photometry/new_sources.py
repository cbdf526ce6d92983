"""New-source candidates that mean something: vetting in one image, recurrence over epochs.

A blind detection with no catalogue counterpart is only a candidate new source
when it is not explained by the image's imperfections:

* **sidelobes of bright sources.** Calibration and deconvolution errors leave
  a pattern around every bright source at a fraction of its flux (about 1% for
  DSA-110 snapshots; the demo's artefacts sit at 0.4-0.9% of 3C286 within
  10'). The local sidelobe level at a candidate is ``sidelobe_fraction`` times
  the brightest apparent (beam-attenuated) flux within ``sidelobe_radius_arcmin``:
  of the image's own islands and of the catalogue's sources, including those
  just outside the image. The candidate must reach ``new_source_sigma`` against
  the noise and that level in quadrature:
  ``peak / sqrt(rms^2 + level^2) >= new_source_sigma``.
* **edges.** Within ``edge_margin_beams`` restoring beams of the image border or
  of the primary-beam cut-off the noise map is poorly sampled and sources just
  outside leave wings and sidelobes: candidates there are rejected.
* **recurrence.** A real source is there in the next image of the same sky; an
  artefact of one bad image is not. :func:`associate` groups the candidates of
  all epochs by position; a candidate seen once is kept but flagged
  ``single_epoch``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

VET_COLUMNS = ("sidelobe_jy", "significance", "edge_distance_beams")


def unit_vectors(ra_deg, dec_deg) -> np.ndarray:
    r, d = np.radians(np.asarray(ra_deg, float)), np.radians(np.asarray(dec_deg, float))
    return np.column_stack([np.cos(d) * np.cos(r), np.cos(d) * np.sin(r), np.sin(d)])


def chord(radius_deg: float) -> float:
    return float(2 * np.sin(np.radians(radius_deg) / 2))


def sidelobe_level(
    cand_ra, cand_dec, bright_ra, bright_dec, bright_flux, fraction: float, radius_deg: float, exclude_deg: float
) -> np.ndarray:
    """``fraction`` x the brightest ``bright_flux`` between ``exclude_deg`` and ``radius_deg`` of each candidate."""
    from scipy.spatial import cKDTree

    out = np.zeros(len(cand_ra))
    if len(cand_ra) == 0 or len(bright_ra) == 0 or fraction <= 0:
        return out
    cand = unit_vectors(cand_ra, cand_dec)
    tree = cKDTree(unit_vectors(bright_ra, bright_dec))
    flux = np.asarray(bright_flux, float)
    lo = chord(exclude_deg)
    for i, near in enumerate(tree.query_ball_point(cand, chord(radius_deg))):
        if not near:
            continue
        near = np.asarray(near)
        d = np.linalg.norm(tree.data[near] - cand[i], axis=1)
        far_enough = near[d > lo]
        if len(far_enough):
            out[i] = fraction * np.nanmax(flux[far_enough])
    return out


def edge_distance(region: np.ndarray) -> np.ndarray:
    """Distance (pixels) of every pixel to the nearest pixel outside ``region`` or off the image."""
    from scipy.ndimage import distance_transform_edt

    return distance_transform_edt(np.pad(region, 1, constant_values=False))[1:-1, 1:-1]


def associate(tables: list[pd.DataFrame], radius_arcsec: float) -> pd.DataFrame:
    """Candidates of many epochs grouped by position (friends of friends within ``radius_arcsec``).

    Each table has ra_deg, dec_deg, snr, flux_jy, mjd (one epoch's candidates).
    Returns one row per group: mean position, n_epochs (distinct epochs it was
    seen in), first and last mjd, the largest snr, the median flux, and
    ``single_epoch`` (seen in one epoch only: possibly an artefact of that image).
    """
    cols = ["ra_deg", "dec_deg", "n_epochs", "first_mjd", "last_mjd", "max_snr", "median_flux_jy", "single_epoch"]
    frames = [t[["ra_deg", "dec_deg", "snr", "flux_jy", "mjd"]] for t in tables if len(t)]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=bool if c == "single_epoch" else float) for c in cols})
    allc = pd.concat(frames, ignore_index=True)
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    xyz = unit_vectors(allc.ra_deg, allc.dec_deg)
    pairs = cKDTree(xyz).query_pairs(chord(radius_arcsec / 3600), output_type="ndarray")
    n = len(allc)
    graph = coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])) if len(pairs) else ([], ([], [])),
                       shape=(n, n))
    label = connected_components(graph, directed=False)[1]
    rows = []
    for g in np.unique(label):
        sel = allc[label == g]
        v = unit_vectors(sel.ra_deg, sel.dec_deg).mean(axis=0)
        n_epochs = int(sel.mjd.round(6).nunique())
        rows.append({
            "ra_deg": float(np.degrees(np.arctan2(v[1], v[0])) % 360),
            "dec_deg": float(np.degrees(np.arctan2(v[2], np.hypot(v[0], v[1])))),
            "n_epochs": n_epochs, "first_mjd": float(sel.mjd.min()), "last_mjd": float(sel.mjd.max()),
            "max_snr": float(sel.snr.max()), "median_flux_jy": float(sel.flux_jy.median()),
            "single_epoch": n_epochs == 1,
        })
    return pd.DataFrame(rows, columns=cols).sort_values("max_snr", ascending=False).reset_index(drop=True)


__all__ = ["VET_COLUMNS", "associate", "edge_distance", "sidelobe_level"]
