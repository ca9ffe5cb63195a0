"""The CLI's and benchmark's allocator setting (cnnfast._malloc)."""
import subprocess
import sys

import pytest

CHECK = """
import resource, numpy as np
from cnnfast._malloc import keep_freed_memory
print(keep_freed_memory())
def step():  # three 8 MB arrays, freed together: glibc would trim them
    a, b, c = np.ones(1 << 20), np.ones(1 << 20), np.ones(1 << 20)
    del a, b, c
step()
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
"""


def _run(env_extra=None):
    import os
    env = dict(os.environ)
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(k, None)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_freed_blocks_are_reused_without_page_faults():
    applied, faults = _run()
    if not applied:
        pytest.skip("libc without mallopt (not glibc)")
    # trimmed and refaulted, the 20 steps take about 30000 faults here
    assert faults < 2048


def test_the_users_own_setting_wins():
    applied, _ = _run({"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert not applied
