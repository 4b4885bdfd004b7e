"""`service.lifecycle.hold_freed_memory`: bank-sized numpy temporaries stop costing page faults."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

# 50 rounds of eight 1 MiB arrays alive together, then freed (as an encoding's temporaries are);
# prints the minor page faults the rounds took
PROBE = """
import resource, sys
import numpy as np
from service.lifecycle import hold_freed_memory
held = hold_freed_memory() if sys.argv[1] == "hold" else None
def round():
    arrays = [np.ones(1 << 17) for _ in range(8)]
    return sum(a.sum() for a in arrays)
round()  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(50):
    round()
print(held, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only"
)
def test_freed_memory_is_reused_instead_of_faulted_in_again() -> None:
    """By default glibc hands the freed 8 MiB back to the kernel and faults it in again next
    round (256 faults per MiB); held, it is reused."""
    _, default_faults = _faults("default")
    held, held_faults = _faults("hold")
    assert held == "True"
    assert default_faults >= 50 * 1000  # the baseline this exists for: fresh pages each round
    assert held_faults < 50  # the freed block is reused (warm-up only)
