"""The guest's modules zip (kernels/pybundle.py): what the guest imports comes from it, and nothing breaks.

Built on this host as a guest boot builds it; the interpreter that reads it is the host's, with the zip first
on sys.path as the guest's init puts it (no guest is booted: tests/test_kernels.py boots real ones with it).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mptcplab
from mptcplab.kernels import pybundle

from .conftest import light

pytestmark = light

READ = r"""
import json, sys
from mptcplab.kernels.guest_main import lazy_package
lazy_package("pyroute2")
import mptcplab.kernels.guest_main
import email.mime.text, importlib.readers  # submodules of zipped packages that the guest's start-up never imports
from importlib.metadata import version
from mptcplab.scenario import load_scenario
scn = load_scenario("cellular")  # a built-in scenario with a bundled trace: the lab's data files are found
files = {n: getattr(m, "__file__", None) or "" for n, m in list(sys.modules.items())}
print(json.dumps({"files": files, "pydantic": version("pydantic"), "trace": scn.paths[1].trace_up}))
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    os.environ["MPTCPLAB_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    try:
        path = pybundle.build()
    finally:
        del os.environ["MPTCPLAB_CACHE"]
    assert path is not None
    return path


def test_the_guest_imports_its_modules_from_the_zip(bundle):
    with zipfile.ZipFile(bundle) as z:
        names = set(z.namelist())
    assert "pydantic/main.pyc" in names and "pyroute2/netlink/__init__.pyc" in names and "json/__init__.pyc" in names
    assert not any(n.startswith(("mptcplab/", "pydantic_core/")) for n in names)  # the lab, and a package with a .so
    assert all(n.endswith(".pyc") for n in names)  # bytecode only: nothing to check against a source in the guest
    src = str(Path(mptcplab.__file__).parents[1])
    env = {**os.environ, "PYTHONPATH": f"{bundle}:{src}", "PYDANTIC_DISABLE_PLUGINS": "__all__"}
    proc = subprocess.run([sys.executable, "-c", READ], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    files = doc["files"]
    zipped = {n for n, f in files.items() if f.startswith(f"{bundle}/")}
    assert {"pydantic", "pydantic.main", "pyroute2.netlink", "encodings", "email.mime.text", "importlib.readers"} <= zipped
    assert not any(n.startswith("mptcplab") for n in zipped)
    assert files["pydantic_core"].startswith(sys.prefix) or "site-packages" in files["pydantic_core"]
    assert len(zipped) > 0.6 * len([f for f in files.values() if f])  # most of what the guest imports
    assert doc["pydantic"] and Path(doc["trace"]).is_file()


def test_the_zip_is_built_once_per_set_of_module_files(bundle):
    os.environ["MPTCPLAB_CACHE"] = str(bundle.parents[1])
    inode = bundle.stat().st_ino
    try:
        again = pybundle.build()
    finally:
        del os.environ["MPTCPLAB_CACHE"]
    assert again == bundle and again.stat().st_ino == inode  # the same files: the same zip, not written again
