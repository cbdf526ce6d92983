"""ops/prometheus: the alerting rules load and fire as intended (promtool test rules)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from needs import require_tool

RULES = Path(__file__).resolve().parents[1] / "ops" / "prometheus"


def test_alerting_rules_pass_their_promtool_tests():
    promtool = require_tool("promtool")
    check = subprocess.run([promtool, "check", "rules", "contimg-rules.yml"], cwd=RULES, capture_output=True,
                           text=True, timeout=60)
    assert check.returncode == 0 and "SUCCESS: 8 rules found" in check.stdout, check.stdout + check.stderr
    test = subprocess.run([promtool, "test", "rules", "contimg-rules.test.yml"], cwd=RULES, capture_output=True,
                          text=True, timeout=120)
    assert test.returncode == 0 and "SUCCESS" in test.stdout, test.stdout + test.stderr
