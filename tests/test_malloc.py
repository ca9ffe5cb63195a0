"""The allocator setting importing cnnfast applies (cnnfast._malloc)."""
import os
import subprocess
import sys

import pytest

import cnnfast

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


def _run(tmp_path, env_extra=None, script=CHECK):
    # the child imports the cnnfast this test runs (installed or built in
    # place), not a source tree in its working directory
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(cnnfast.__file__)))
    for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        env.pop(k, None)
    env.update(env_extra or {})
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, cwd=tmp_path, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer replaces glibc's allocator (scripts/sanitize.sh)")
def test_freed_blocks_are_reused_without_page_faults(tmp_path):
    applied, faults = _run(tmp_path)
    if not applied:
        pytest.skip("libc without mallopt (not glibc)")
    # trimmed and refaulted, the 20 steps take about 30000 faults here
    assert faults < 2048


def test_the_users_own_setting_wins(tmp_path):
    applied, _ = _run(tmp_path, {"MALLOC_TRIM_THRESHOLD_": "1000000"})
    assert not applied


IMPORT_ONLY = CHECK.replace("from cnnfast._malloc import keep_freed_memory\nprint(keep_freed_memory())",
                            "import cnnfast\nprint(True)")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
@pytest.mark.skipif("asan" in os.environ.get("LD_PRELOAD", ""),
                    reason="AddressSanitizer replaces glibc's allocator (scripts/sanitize.sh)")
@pytest.mark.parametrize("opt_out", [False, True])
def test_importing_cnnfast_is_enough(tmp_path, opt_out):
    """No MALLOC_* variables needed: the import applies the setting (unless
    CNNFAST_KEEP_FREED_MEMORY=0)."""
    assert "import cnnfast" in IMPORT_ONLY
    _, faults = _run(tmp_path, {"CNNFAST_KEEP_FREED_MEMORY": "0"} if opt_out else None,
                     IMPORT_ONLY)
    if opt_out:
        assert faults > 4096   # glibc's defaults: trimmed and refaulted every step
    else:
        assert faults < 2048
