"""Kernel names: upstream versions, their order, and what a name given on the command line matches.

Pure functions, no I/O, no imports from the engine: the kernel catalog (which
Debian kernel a name means) and the results store (which stored runs a name
selects) both use them, so ``6.1`` means the same in every command.

A name matches a version or a release as a prefix *on components*: ``6.1``
matches ``6.1.176`` and ``6.1.0-50-cloud-amd64`` but not ``6.12.95``;
components are separated by ``.``, ``-``, ``+``, ``~`` and ``_``.
"""
from __future__ import annotations

import re

from debian.debian_support import Version

#: characters that end a component of a version or release
SEPARATORS = ".-+~_"

_DEBIAN_BUILD = re.compile(r"\bDebian (\d+(?:\.\d+)+(?:~rc\d+)?)(?:-(\S+))?")
_LEADING = re.compile(r"\d+(?:\.\d+)*")


def prefix_matches(query: str, name: str) -> bool:
    """Whether `query` is a prefix of `name` ending at a component boundary.

    ``prefix_matches("6.1", "6.1.176")`` is True, ``prefix_matches("6.1", "6.12.95")``
    False, ``prefix_matches("7.3", "7.3~rc7")`` True; an exact match is a match.
    """
    if not query or not name.startswith(query):
        return False
    return len(name) == len(query) or query[-1] in SEPARATORS or name[len(query)] in SEPARATORS


def debian_version_of(build: str) -> str | None:
    """The Debian package version in a kernel build string (``uname -v``), if it carries one.

    ``"#1 SMP PREEMPT_DYNAMIC Debian 6.1.176-1 (2026-10-02)"`` → ``"6.1.176-1"``.
    """
    m = _DEBIAN_BUILD.search(build or "")
    if not m:
        return None
    return m.group(1) + (f"-{m.group(2)}" if m.group(2) else "")


def upstream_of(release: str, build: str = "") -> str:
    """The upstream version of a kernel from its release (``uname -r``) and build string (``uname -v``).

    Debian's build string names the real version (``6.1.176`` for release
    ``6.1.0-50-cloud-amd64``, whose release only carries the ABI name ``6.1.0``);
    otherwise the release's leading dotted numbers are used
    (``6.12.117+deb13-cloud-amd64`` → ``6.12.117``). Returns "" when neither has one.
    """
    debian = debian_version_of(build)
    if debian:
        return debian.split("-", 1)[0]
    m = _LEADING.match(release or "")
    return m.group(0) if m else ""


def stored_kernel_matches(query: str, release: str, build: str = "") -> bool:
    """Whether a stored run's kernel (its release and build string) is one `query` names.

    A prefix (on components) of the release, of the upstream version, or of the
    Debian package version in the build string: ``6.1`` matches
    ``6.1.0-50-cloud-amd64`` (upstream 6.1.176) and not ``6.12.117+deb13-cloud-amd64``.
    """
    query = query.strip()
    if not query:
        return False
    names = [release, upstream_of(release, build), debian_version_of(build) or ""]
    return any(n and prefix_matches(query, n) for n in names)


def version_key(version: str) -> Version:
    """Sort key in Debian's version order: 6.1.176 < 6.12.95 < 7.3~rc7 < 7.3.4; 6.12.95-1~bpo12+1 < 6.12.95-1.

    Strings that are not Debian versions (a custom build's release) sort by
    their leading dotted numbers.
    """
    try:
        return Version(version)
    except ValueError:
        m = _LEADING.match(version)
        return Version(m.group(0) if m else "0")
