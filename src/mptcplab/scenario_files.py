"""Where the built-in scenarios are: plain files, found without loading the scenario models (pydantic), so
`mptcplab scenarios --show NAME` and a name's lookup stay fast."""
from __future__ import annotations

from importlib import resources
from pathlib import Path


def builtin_dir() -> Path:
    """The directory of the built-in scenario TOML files shipped in the package."""
    return Path(str(resources.files("mptcplab") / "scenarios"))


def builtin_scenarios() -> dict[str, Path]:
    """Every built-in scenario by name (its file's stem), sorted by name."""
    return {p.stem: p for p in sorted(builtin_dir().glob("*.toml"))}
