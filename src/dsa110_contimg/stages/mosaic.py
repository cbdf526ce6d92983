"""Stages of rules ``plan_mosaic``, ``build_mosaic`` and ``qa_mosaic``.

Each writes its product atomically, then its sidecar, then registers it
(kinds ``mosaic_plan``, ``mosaic`` and ``mosaic_qa``; columns in
``docs/products.md``). A mosaic whose plan chose no image is refused with
the reasons, so no empty mosaic is ever written or registered.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .. import naming
from ..mosaic import build as mosaic_build
from ..mosaic import plan as mosaic_plan
from ..mosaic import qa as mosaic_qa
from ..mosaic import wiring as mosaic_wiring
from .common import stage_run

#: The files rule build_mosaic writes, by kind (the registry's kinds of rule ``build_mosaic``).
BUILD_KINDS = tuple(k for k in naming.rule_outputs("", "build_mosaic", tier="t", mosaic="m")
                    if not k.endswith("_sidecar"))


def _selection(tier: str, name: str, images: Sequence[str], config: Mapping[str, Any],
               selection: Mapping[str, Any] | None) -> mosaic_wiring.Selection:
    if selection is not None:
        return mosaic_wiring.Selection.from_dict(selection)
    groups = sorted(mosaic_plan._group_of(i) for i in images)
    newest = naming.parse_timestamp(groups[-1]) if groups and mosaic_plan._is_group(groups[-1]) else None
    return mosaic_wiring.selection_for(tier, name, config["mosaic"], newest)


def plan_mosaic(
    images: Sequence[str],
    pbs: Sequence[str],
    plan: str,
    tier: str,
    name: str,
    config: Mapping[str, Any],
    selection: Mapping[str, Any] | None = None,
    log: str | None = None,
    left_out: Mapping[str, str] | None = None,
) -> dict:
    """Rule ``plan_mosaic``: candidate images (+ their beams) -> the plan file, sidecar, database row.

    ``selection`` is :meth:`Selection.to_dict` as the rule's params computed
    it at parse time (None: computed here from the config and the images).
    ``left_out`` maps groups of the selection that the workflow did not wait
    for (held back by a failure) to why, key ``""`` an empty selection's
    reason: they join the plan's rejected list, so an empty plan says why.
    """
    if len(images) != len(pbs):
        raise ValueError(f"{len(images)} images but {len(pbs)} primary beams")
    with stage_run("plan_mosaic", config, {"tier": tier, "mosaic": name}, log) as run:
        logger = run.logger
        sel = _selection(tier, name, images, config, selection)
        opts = mosaic_wiring.TierOptions.from_config(config["mosaic"]["tiers"][tier])
        result = mosaic_plan.make_plan(sel, opts, list(zip(images, pbs)))
        result.rejected.extend({"group": g, "image": "", "reason": why} for g, why in sorted((left_out or {}).items()))
        for r in result.rejected:
            logger.info("left out %s: %s", r["image"] or r["group"] or "everything", r["reason"])
        summary = result.summary()
        if result.images:
            logger.info("%s: %d of %d candidate images, %s grid %s, about %.0f MB to build", sel.describe(),
                        len(result.images), len(images), opts.projection, summary["grid_shape"],
                        summary["memory_estimate_mb"])
        else:
            logger.warning("%s: no image passed the selection; build_mosaic will refuse this plan",
                           sel.describe())
        text = result.to_json()
        with run.output(plan) as tmp:
            Path(tmp).write_text(text, encoding="utf-8")
        run.publish(plan, kind="mosaic_plan", inputs=images, qa=summary, status="ok" if result.images else "empty")
    return summary


def build_mosaic(plan: str, outputs: Mapping[str, str], config: Mapping[str, Any], log: str | None = None) -> dict:
    """Rule ``build_mosaic``: plan -> mosaic, noise and weights maps, sidecar, database row.

    ``outputs`` maps each of :data:`BUILD_KINDS` to its path. Raises
    :class:`~dsa110_contimg.mosaic.MosaicError` (nothing written or registered)
    when the plan chose no image.
    """
    missing = [k for k in BUILD_KINDS if k not in outputs]
    if missing:
        raise ValueError(f"outputs lacks {missing}")
    p = mosaic_plan.Plan.read(plan)
    with stage_run("build_mosaic", config, {"tier": p.tier, "mosaic": p.name}, log) as run:
        logger = run.logger
        qa = mosaic_build.build(p, outputs, logger)
        wall = run.elapsed_s
        logger.info("wrote %s: %d images, %d x %d pixels, %.0f%% covered, peak %.3g Jy/beam, "
                    "noise %.3g mJy/beam at best (median %.3g), %.1f s, peak memory %.0f MB",
                    outputs["mosaic"], qa["n_images"], qa["shape"][1], qa["shape"][0],
                    100 * qa["covered_fraction"], qa["peak_jy"], qa["noise_min_jy"] * 1e3,
                    qa["noise_median_jy"] * 1e3, wall, qa["peak_rss_mb"])
        run.publish(
            outputs["mosaic"], kind="mosaic", inputs=[plan, *(e.image for e in p.images)],
            qa=qa, timings={"wall_s": wall, "sum_s": qa.pop("sum_s")},
            extra={"products": {k: os.fspath(outputs[k]) for k in BUILD_KINDS},
                   "primary_beams": [e.pb for e in p.images], "options": p.options.record()},
        )
    return qa


def qa_mosaic(
    mosaic_fits: str,
    noise: str,
    png: str,
    config: Mapping[str, Any],
    log: str | None = None,
) -> dict:
    """Rule ``qa_mosaic``: mosaic + noise map -> QA figures and grade (sidecar), PNG preview, database row."""
    cfg = config["mosaic"]
    tier, name, _ = naming.parse_mosaic_path(mosaic_fits)
    with stage_run("qa_mosaic", config, {"tier": tier, "mosaic": name}, log) as run:
        logger = run.logger
        opts = mosaic_qa.QAOptions.from_config(cfg.get("qa"))
        catalogue, catalogue_name = mosaic_qa.load_reference(config)
        data, sigma, wcs, header = mosaic_qa.read_maps(mosaic_fits, noise)
        qa, sources, matches = mosaic_qa.measure_qa(data, sigma, wcs, header, catalogue, opts)
        qa.update(tier=tier, name=name, reference_catalogue=catalogue_name, n_catalogue=len(catalogue))
        with run.output(png) as tmp:
            mosaic_qa.render_preview(tmp, data, sigma, qa, matches, f"{tier}/{name}", opts.preview_pixels)
        level = logger.warning if qa["grade"] != "good" else logger.info
        level("%s/%s: rms %.3g mJy/beam (uniformity %.2f, measured/map %.2f), peak %.3g Jy/beam, DR %.0f, "
              "%d sources, %d matched, offset %s arcsec, flux ratio %s: grade %s%s", tier, name,
              qa["rms_jy"] * 1e3, qa["rms_uniformity"], qa["noise_ratio"], qa["peak_jy"], qa["dynamic_range"],
              qa["n_sources"], qa["n_matched"], _fmt(qa["astrometry_offset_arcsec"]), _fmt(qa["flux_ratio"], 3),
              qa["grade"], f" ({'; '.join(qa['grade_reasons'])})" if qa["grade_reasons"] else "")
        path = (config.get("catalogue") or {}).get("path")
        inputs = [mosaic_fits, noise] + ([path] if path else [])
        run.publish(png, kind="mosaic_qa", inputs=inputs, qa=qa, status="ok" if qa["grade"] != "bad" else "failed_qa")
    return qa


def mosaic_outcome(plan: str, qa: str | None, outcome: str, config: Mapping[str, Any],
                   log: str | None = None) -> dict:
    """Rule ``mosaic_outcome``: what became of one mosaic, from its plan (and QA, when built).

    ``{tier, name, built, plan, mosaic, qa, n_images, left_out: [{group, image, reason}]}``:
    a workflow record (the default target's per mosaic), not a registered product.
    """
    tier, name, _ = naming.parse_mosaic_path(plan)
    with stage_run("mosaic_outcome", config, {"tier": tier, "mosaic": name}, log, record=False) as run:
        record = json.loads(Path(plan).read_text(encoding="utf-8"))
        built = qa is not None
        result = {
            "tier": tier, "name": name, "built": built, "plan": plan,
            "mosaic": naming.mosaic_path(config["results_dir"], tier, name) if built else None,
            "qa": qa, "n_images": len(record.get("images") or []), "left_out": record.get("rejected") or [],
        }  # fmt: skip
        with run.output(outcome) as tmp:
            Path(tmp).write_text(json.dumps(result, indent=1, sort_keys=True), encoding="utf-8")
    return result


def _fmt(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"
