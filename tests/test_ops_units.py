"""The ops/ files an operator installs: the commands they run are valid `contimg run`
invocations, and systemd accepts the units (systemd-analyze verify)."""

from __future__ import annotations

import configparser
import getpass
import shlex
import subprocess
import sys
from pathlib import Path

from needs import require_tool

from dsa110_contimg import cli

OPS = Path(__file__).resolve().parents[1] / "ops"


def _unit(path: Path) -> configparser.ConfigParser:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str
    unit.read(path)
    return unit


def _contimg_args(command: str) -> list[str]:
    words = shlex.split(command)
    at = next(i for i, w in enumerate(words) if w.endswith("/contimg"))
    return words[at + 1:]


def test_service_timer_and_cron_run_contimg_run():
    service = _unit(OPS / "systemd" / "contimg-run.service")
    args = _contimg_args(service["Service"]["ExecStart"])
    parsed = cli.build_parser(args).parse_args(args)
    assert parsed.func is cli.cmd_run and parsed.config == ["config/config.yaml", "config/site.yaml"]
    assert service["Service"]["Type"] == "oneshot" and "3" in service["Service"]["SuccessExitStatus"].split()
    timer = _unit(OPS / "systemd" / "contimg-run.timer")
    assert timer["Timer"]["Unit"] == "contimg-run.service" and "OnUnitInactiveSec" in timer["Timer"]
    (line,) = [x for x in (OPS / "cron" / "contimg-run.cron").read_text().splitlines() if x and x[0] != "#"]
    fields = line.split(None, 5)
    assert fields[:5] == ["*/5", "*", "*", "*", "*"]
    command = fields[5].split("&&", 1)[1].split(">>")[0]
    args = _contimg_args(command)
    assert cli.build_parser(args).parse_args(args).func is cli.cmd_run


def test_systemd_accepts_the_units(tmp_path):
    analyze = require_tool("systemd-analyze")
    contimg = Path(sys.executable).with_name("contimg")
    for name in ("contimg-run.service", "contimg-run.timer"):
        text = (OPS / "systemd" / name).read_text()
        text = text.replace("/opt/dsa110-contimg/.venv/bin/contimg", str(contimg))
        text = text.replace("/data/contimg", str(tmp_path)).replace("=contimg\n", f"={getpass.getuser()}\n")
        (tmp_path / name).write_text(text)
    out = subprocess.run([analyze, "verify", "--man=no", "contimg-run.service", "contimg-run.timer"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and not out.stderr.strip(), out.stderr
