"""pyproject.toml lists every package of the source tree: setuptools installs
only the packages it names, so a package missing there imports from the
source tree and fails once installed (cnnfast._ops did, in a fresh clone)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package():
    text = (ROOT / "pyproject.toml").read_text()
    block = re.search(r"^packages = \[(.*?)\]", text, re.S | re.M)
    assert block, "pyproject.toml has no [tool.setuptools] packages list"
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for p in (ROOT / "cnnfast").rglob("__init__.py")}
    assert found == listed, (sorted(found - listed), sorted(listed - found))
