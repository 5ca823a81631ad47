"""``import graphgrad`` has glibc's malloc keep a step's freed memory (GRAPHGRAD_MALLOC).

Measured by behaviour, in fresh processes: a loop that allocates and frees twelve 1 MiB
arrays a round faults its pages in again every round under glibc's own thresholds (the
freed memory at the top of the heap passes the trim threshold and goes back to the kernel),
and faults none once graphgrad has set them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from test_blas import graphgrad_info

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc's mallopt and minor-fault counts"
)

_PROBE = """
import resource, sys
import numpy as np
if sys.argv[1] == "import":
    import graphgrad
def step():
    arrays = [np.ones(256 * 1024, np.float32) for _ in range(12)]  # 12 x 1 MiB, touched
    del arrays
for _ in range(3):
    step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / 20)
"""


def _faults_per_round(how: str, **env: str) -> float:
    full = {k: v for k, v in os.environ.items() if k != "GRAPHGRAD_MALLOC"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, how],
        env={**full, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return float(proc.stdout.split()[-1])


def _glibc() -> bool:
    import platform

    return platform.libc_ver()[0] == "glibc"


@pytest.mark.skipif(not _glibc(), reason="the settings are glibc's")
def test_a_step_reuses_freed_memory_once_graphgrad_is_imported() -> None:
    # Without graphgrad (and with GRAPHGRAD_MALLOC=system) every round faults its 12 MiB back
    # in (3072 pages); with it, none: the probe proves the fault is there to be removed.
    assert _faults_per_round("plain") > 1000
    assert _faults_per_round("import", GRAPHGRAD_MALLOC="system") > 1000
    assert _faults_per_round("import") < 10


@pytest.mark.skipif(not _glibc(), reason="the settings are glibc's")
def test_graphgrad_info_says_what_was_done_to_malloc() -> None:
    proc = graphgrad_info("--json")
    assert proc.returncode == 0, proc.stderr
    m = json.loads(proc.stdout)["malloc"]
    assert m == {"tuned": True, "reason": "mmap threshold 32 MiB, trim threshold 1 GiB"}
    proc = graphgrad_info("--json", GRAPHGRAD_MALLOC="system")
    assert json.loads(proc.stdout)["malloc"]["tuned"] is False
    text = graphgrad_info().stdout
    assert "memory:    glibc malloc keeps freed memory for the next step" in text


def test_an_unknown_setting_warns_naming_the_variable_and_keeps_the_default() -> None:
    proc = graphgrad_info("--json", GRAPHGRAD_MALLOC="bogus")
    assert proc.returncode == 0, proc.stderr
    assert "GRAPHGRAD_MALLOC='bogus': expected one of keep, system; using 'keep'" in proc.stderr
    if _glibc():
        assert json.loads(proc.stdout)["malloc"]["tuned"] is True
