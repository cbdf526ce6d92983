"""CASA runs offline from the casadata wheel and leaves the user's home alone."""

from __future__ import annotations

import os

from simdata import run_casa


def test_casa_works_offline_without_touching_home(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    result = run_casa(
        """
        me = ct.measures()
        epoch = me.epoch("utc", "2025-06-15T08:00:00")
        me.doframe(me.observatory("OVRO-LWA"))
        me.doframe(epoch)
        j2000 = me.direction("J2000", "13h31m08.288s", "30d30m32.96s")
        azel = me.measure(j2000, "AZEL")
        result = dict(el=azel["m1"]["value"])
        """,
        work,
        env={"HOME": str(home), "CONTIMG_CASA_DIR": str(tmp_path / "casa-state")},
    )
    assert -1.6 < result["el"] < 1.6  # a real direction conversion, with measures data
    assert list(home.iterdir()) == [], "CASA wrote into HOME"
    assert not [p for p in os.listdir(work) if p.startswith("casa-") and p != "casa-test.log"]
