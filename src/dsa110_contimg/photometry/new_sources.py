"""New-source candidates that mean something: vetting in one image, recurrence over epochs.

A blind detection with no catalogue counterpart is only a candidate new source
when it is not explained by the image's imperfections:

* **sidelobes of bright sources.** Calibration and deconvolution errors leave
  a pattern around every bright source. Two terms set the local sidelobe level
  at a candidate, the larger counts:

  - near (off by default; for images without a PSF envelope):
    ``sidelobe_fraction`` times the brightest apparent (beam-attenuated) flux
    within ``sidelobe_radius_arcmin`` (the demo's artefacts once sat at
    0.4-0.9% of 3C286 within 10', before the field's sources were subtracted);
  - far, along the PSF: ``sidelobe_psf_fraction`` times the largest, over
    bright sources within ``sidelobe_psf_radius_arcmin``, of apparent flux
    times the PSF's sidelobe envelope at that distance (:func:`psf_envelope`,
    the strongest |PSF| in each annulus, recorded with the image). At full
    size the artefacts left after self-calibration and subtraction sit at
    ~0.1% of 3C286 on the PSF's sidelobe lattice 13-27' from it: 1-3% of the
    envelope there.

  The bright sources are the image's own islands and the catalogue's,
  including those just outside the image. The candidate must reach
  ``new_source_sigma`` against the noise and that level in quadrature:
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


def psf_envelope(psf: np.ndarray, cell_arcsec: float, inner_arcsec: float, step: float = 1.15) -> dict:
    """The PSF's sidelobe envelope: the largest |PSF| / peak in annuli from ``inner_arcsec`` (outside the main
    lobe) to the PSF image's edge, radii growing by ``step``. Returns {"edges_arcmin": [n + 1 annulus
    edges], "level": [n levels]}."""
    psf = np.nan_to_num(np.asarray(psf, float))
    cy, cx = np.unravel_index(np.argmax(psf), psf.shape)
    yy, xx = np.indices(psf.shape)
    r = np.hypot(yy - cy, xx - cx) * cell_arcsec
    a = np.abs(psf) / psf[cy, cx]
    outer = min(cy, cx, psf.shape[0] - 1 - cy, psf.shape[1] - 1 - cx) * cell_arcsec
    edges = [inner_arcsec]
    while edges[-1] * step < outer:
        edges.append(edges[-1] * step)
    order = np.argsort(r, axis=None)
    r_sorted, a_sorted = r.ravel()[order], a.ravel()[order]
    bounds = np.searchsorted(r_sorted, edges)
    level = [float(a_sorted[i0:i1].max()) if i1 > i0 else 0.0 for i0, i1 in zip(bounds[:-1], bounds[1:], strict=True)]
    return {"edges_arcmin": [e / 60 for e in edges], "level": level}


def envelope_at(envelope: dict | None, distance_deg: np.ndarray) -> np.ndarray:
    """The envelope's level in the annulus holding each distance (its first and last levels inside and
    beyond its range); 1 everywhere without an envelope (no PSF known: every bright source counts in full)."""
    d = np.asarray(distance_deg, float)
    if not envelope or not envelope.get("level"):
        return np.ones_like(d)
    level = np.asarray(envelope["level"], float)
    i = np.searchsorted(np.asarray(envelope["edges_arcmin"], float), d * 60, side="right") - 1
    return level[np.clip(i, 0, level.size - 1)]


def sidelobe_level(
    cand_ra, cand_dec, bright_ra, bright_dec, bright_flux, fraction: float, radius_deg: float, exclude_deg: float,
    envelope: dict | None = None, psf_fraction: float = 0.0, psf_radius_deg: float = 0.0,
) -> np.ndarray:
    """The larger of ``fraction`` x the brightest ``bright_flux`` between ``exclude_deg`` and ``radius_deg``
    and (with an ``envelope``) ``psf_fraction`` x the largest ``bright_flux`` x envelope (:func:`envelope_at`)
    between ``exclude_deg`` and ``psf_radius_deg`` of each candidate."""
    near = _level(cand_ra, cand_dec, bright_ra, bright_dec, bright_flux, fraction, radius_deg, exclude_deg, None)
    if envelope is None or psf_fraction <= 0 or psf_radius_deg <= 0:
        return near
    far = _level(cand_ra, cand_dec, bright_ra, bright_dec, bright_flux, psf_fraction, psf_radius_deg,
                 exclude_deg, envelope)
    return np.maximum(near, far)


def _level(cand_ra, cand_dec, bright_ra, bright_dec, bright_flux, fraction, radius_deg, exclude_deg, envelope):
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
        far = d > lo
        if far.any():
            dist_deg = np.degrees(2 * np.arcsin(d[far] / 2))
            weight = envelope_at(envelope, dist_deg) if envelope is not None else 1.0
            out[i] = fraction * np.nanmax(flux[near[far]] * weight)
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


__all__ = ["VET_COLUMNS", "associate", "edge_distance", "envelope_at", "psf_envelope", "sidelobe_level"]
