"""Kernels built from source: which Debian source release a name means, the lab's config fragment, the refusals
of `kernel build`, and (heavy) a real UML build booted to its init.

Source releases are resolved against a recorded index (tests/data/debian-kernels/*.sources.Packages: the
real `linux-source-X.Y` stanzas of the six suites), so the rule is tested without the network.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from mptcplab.kernels.catalog import parse_sources
from mptcplab.kernels.fetch import SUITES, source_stanzas
from mptcplab.kernels.source import UnknownSource, nearest, resolve_source

from .conftest import light

INDEX = Path(__file__).parent / "data" / "debian-kernels"


@pytest.fixture(scope="module")
def sources():
    return parse_sources({suite: (INDEX / f"{suite}.sources.Packages").read_text() for suite in SUITES})


@light
def test_the_recorded_index_offers_twelve_source_releases_in_version_order(sources):
    assert [s.upstream for s in sources] == ["6.1.170", "6.1.176", "6.12.95", "6.12.107", "6.12.117", "7.2.6", "7.2.9",
                                             "7.2.11", "7.2.12", "7.2.13", "7.3~rc7", "7.3.4"]
    s = next(s for s in sources if s.upstream == "6.12.117")
    assert (s.package, s.version, s.suite, s.series) == ("linux-source-6.12", "6.12.117-1", "trixie", "6.12")
    assert s.size == 153474904


@light
def test_source_stanzas_keeps_only_the_source_packages(sources):
    recorded = (INDEX / "trixie.sources.Packages").read_text()
    noise = ("Package: linux-source\nVersion: 6.12.117-1\nDepends: linux-source-6.12 (= 6.12.117-1)\n\n"
             "Package: linux-image-6.12.117+deb13-cloud-amd64\nVersion: 6.12.117-1\n\nPackage: zsh\nVersion: 5.9-8\n\n")
    whole = (noise + recorded.strip() + "\n\n" + noise).encode()
    assert parse_sources({"trixie": source_stanzas(whole)}) == parse_sources({"trixie": recorded})
    assert "zsh" not in source_stanzas(whole) and "cloud-amd64" not in source_stanzas(whole)


@light
@pytest.mark.parametrize(("name", "version"), [
    ("6.12.117", "6.12.117-1"), ("6.12.117-1", "6.12.117-1"), ("6.12", "6.12.117-1"), ("6.1", "6.1.176-1"),
    ("6.12.95", "6.12.95-1~bpo12+1"), ("7.3", "7.3.4-1~bpo13+1"), ("7.3~rc7", "7.3~rc7-1~exp1"), ("7", "7.3.4-1~bpo13+1"),
])
def test_a_source_name_means_one_release(sources, name, version):
    assert resolve_source(name, sources).version == version


@light
def test_an_unknown_source_release_names_the_nearest(sources):
    with pytest.raises(UnknownSource, match=r"'6\.12\.118'.*nearest: 6\.12\.107, 6\.12\.117, 7\.2\.6, 7\.2\.9") as e:
        resolve_source("6.12.118", sources)
    assert e.value.exit_code == 2
    assert nearest("5.10", sources) == ["6.1.170", "6.1.176"]
