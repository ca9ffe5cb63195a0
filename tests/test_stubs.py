"""The package is typed (PEP 561): py.typed and a stub for every compiled
module ship with it, and the stubs match the sources they are generated
from (scripts/gen_stubs.py; CI also runs mypy over examples/)."""
import importlib.util
from pathlib import Path

import pytest

import cnnfast
from cnnfast import functional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path(cnnfast.__file__).parent


def test_the_installed_package_is_typed():
    assert (PACKAGE / "py.typed").is_file()
    assert (PACKAGE / "functional.pyi").is_file()
    compiled = [p for p in (PACKAGE / "_ext").iterdir() if p.suffix in (".so", ".pyd")]
    assert compiled
    for module in compiled:
        assert (PACKAGE / "_ext" / (module.name.split(".")[0] + ".pyi")).is_file(), module


def test_the_stubs_are_up_to_date():
    script = ROOT / "scripts" / "gen_stubs.py"
    if not script.is_file():
        pytest.skip("not run from a source tree")
    spec = importlib.util.spec_from_file_location("gen_stubs", script)
    gen_stubs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen_stubs)
    stale = [path.name for path, text in gen_stubs.stubs().items()
             if not path.is_file() or path.read_text() != text]
    assert not stale, f"stale stubs {stale}: run python scripts/gen_stubs.py"


def test_the_functional_stub_names_every_public_op():
    text = (PACKAGE / "functional.pyi").read_text()
    for name in functional.__all__:
        assert f"\ndef {name}(" in text, name
