"""Link backends by name; `auto` picks the most faithful one this kernel allows."""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ..errors import UnsupportedError, UsageError

if TYPE_CHECKING:  # annotations only: links.traces (a scenario's trace check) must not load the lab and pyroute2
    from ..scenario import Scenario
    from .base import LinkBackend

BACKENDS = {
    "tbf": "mptcplab.links.tbf:TbfLink",
    "netem": "mptcplab.links.netem:NetemLink",
    "wire": "mptcplab.links.wire:WireLink",
}


def backend_choices() -> str:
    """The names a scenario's `[run] link_backend` and `--link-backend` accept: "auto, tbf, netem or wire"."""
    names = ["auto", *BACKENDS]
    return f"{', '.join(names[:-1])} or {names[-1]}"


def unknown_backend(name: str) -> str | None:
    """None when `name` is `auto` or a registered backend, else what to say ("choose auto, tbf, netem or wire").

    The one check of a backend name, for the scenario's key, every command's --link-backend and select_backend.
    """
    return None if name == "auto" or name in BACKENDS else f"choose {backend_choices()}"


def backend_class(name: str) -> type[LinkBackend] | None:
    """The backend class, or None when this build of the lab does not have it."""
    module, _, cls = BACKENDS[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except ModuleNotFoundError:
        return None


def select_backend(requested: str, scenario: Scenario) -> type[LinkBackend]:
    """Resolve `requested` ('auto' or a name) to a backend that can run `scenario`."""
    from ..capabilities import netem_available

    if requested != "auto":
        problem = unknown_backend(requested)
        if problem:
            raise UsageError(f"unknown link backend {requested!r}; {problem}")
        cls = backend_class(requested)
        if cls is None:
            raise UnsupportedError(f"the {requested} link backend is not available in this version of mptcplab")
        if requested == "netem" and not netem_available():
            raise UnsupportedError("this kernel has no sch_netem, so the netem link backend cannot run", "use --link-backend wire (userspace emulation) or auto")
        reason = cls.unsupported(scenario)
        if reason:
            raise UnsupportedError(reason)
        return cls
    order = (["netem"] if netem_available() else []) + ["wire", "tbf"]
    reasons = []
    for name in order:
        cls = backend_class(name)
        if cls is None:
            continue
        reason = cls.unsupported(scenario)
        if reason is None:
            return cls
        reasons.append(reason)
    raise UnsupportedError(reasons[0] if reasons else "no link backend can run this scenario")
