"""One verdict from every command: the metric table built from the workload specs, each case judged by its main
metric by compare, history, runs and the report index alike (a synthetic store: the values decide the verdicts)."""
from __future__ import annotations

import pytest

from mptcplab.errors import UsageError
from mptcplab.metrics import METRIC_TABLE, METRICS_BY_KIND, UnknownMetric, main_metric, metric
from mptcplab.workload_specs import SPECS

pytestmark = pytest.mark.light  # synthetic results in a SQLite store, no traffic


def test_an_unknown_metric_or_kind_is_refused_not_guessed() -> None:
    with pytest.raises(UnknownMetric) as e:
        metric("latency_p95_ms")
    assert isinstance(e.value, UsageError) and "unknown metric 'latency_p95_ms'" in e.value.message
    assert "latency_p99_ms" in (e.value.hint or "")  # the choices are named
    with pytest.raises(UnknownMetric, match="workload kind 'torrent' declares no metrics"):
        main_metric("torrent")  # no silent goodput for a kind nobody declared
    assert metric("wifi.idle_queued_share").better == "lower"  # a path's subflow metric is known by its base name


def test_the_metric_table_is_built_from_what_each_spec_declares() -> None:
    for spec in SPECS:
        kind = spec.model_fields["kind"].default
        measures = spec.MEASURES
        assert METRICS_BY_KIND[kind] is measures
        for row in measures.metrics:
            assert METRIC_TABLE[row.name] is row
        assert measures.main in METRIC_TABLE and measures.baseline in METRIC_TABLE
    assert main_metric("rr") == "latency_p99_ms" and metric("latency_p99_ms").better == "lower"
