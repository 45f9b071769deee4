"""CI's 30-second version of the burst benchmark (issue 5): the whole bench pipeline -- simulators,
Marathon simulator on docker_sim slaves, the registrar and the floor as processes, the relay, the
registration log -- runs a 400-task burst and the figures must be sane. Performance targets are not
asserted here (benchmarks are not part of CI's pass/fail); completeness and sanity are."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ROOT


def test_bench_smoke() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "smoke"], cwd=ROOT, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((ROOT / "bench" / "results" / "smoke.json").read_text())
    assert "error" not in result, result
    for who in ("registrar", "floor"):
        assert result[who]["registered"] == 400, result[who]
    assert "| smoke" in out.stdout and "TARGET" in out.stdout
