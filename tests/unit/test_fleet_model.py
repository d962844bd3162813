"""The fleet model: connection freshness, health from the agents, sort, filter, merged events."""

from __future__ import annotations

from agent.schema import Event
from console.fleet import FleetModel, age
from tests.support.fake_fleet import NOW, host_status


def model() -> FleetModel:
    m = FleetModel(stale_after=10.0)
    m.add_host("web-1", {"role": "web"}, "fake")
    m.add_host("web-2", {"role": "web"}, "fake")
    m.add_host("db-1", {"role": "db"}, "fake")
    m.polled("web-1", host_status("web-1", cpu=0.9), [], NOW)
    m.polled("web-2", host_status("web-2", down=True), [], NOW)
    m.polled("db-1", host_status("db-1", cpu=0.2), [], NOW)
    return m


def test_a_silent_host_goes_stale_then_down_and_says_since_when() -> None:
    m = model()
    h = m.hosts["db-1"]
    assert h.badge(NOW + 5, 10) == "live"
    assert h.badge(NOW + 42, 10) == "stale 42s"
    m.failed("db-1", "connection refused", NOW + 12)
    assert h.connection(NOW + 12, 10) == "stale"
    assert h.connection(NOW + 31, 10) == "down"
    # down since the first failure, not since the last poll
    m.failed("db-1", "connection refused", NOW + 60)
    assert h.badge(NOW + 72, 10) == "down 60s"
    # it answers again: live, error forgotten
    m.polled("db-1", host_status("db-1"), [], NOW + 80)
    assert h.badge(NOW + 80, 10) == "live" and h.error is None


def test_a_host_never_reached_is_down_not_ok() -> None:
    m = FleetModel()
    m.add_host("x", {}, "fake")
    assert m.rows(NOW)[0].status == "connecting"
    m.failed("x", "no route to host", NOW)
    row = m.rows(NOW)[0]
    assert (row.status, row.severity) == ("down", "down")


def test_status_sorts_worst_first_and_other_columns_are_reversible() -> None:
    m = model()
    assert [r.key for r in m.rows(NOW)] == ["web-2", "db-1", "web-1"]
    assert [r.key for r in m.rows(NOW, sort="host")] == ["db-1", "web-1", "web-2"]
    assert [r.key for r in m.rows(NOW, sort="host", reverse=True)] == ["web-2", "web-1", "db-1"]
    assert m.rows(NOW, sort="cpu")[0].key == "web-1"
    row = m.rows(NOW, sort="host")[2]
    assert (row.services, row.failing, row.cpu, row.disk) == (
        "0/1 up, 1 down",
        "web-http",
        "10%",
        "60%",
    )


def test_filter_by_name_label_and_status() -> None:
    m = model()
    keys = lambda q: sorted(r.key for r in m.rows(NOW, query=q))  # noqa: E731
    assert keys("web") == ["web-1", "web-2"]
    assert keys("role=db") == ["db-1"]
    assert keys("down") == ["web-2"]
    assert keys("status:ok role=web") == ["web-1"]
    assert keys("nothing-matches") == []
    assert m.counts(NOW) == {"ok": 2, "unknown": 0, "degraded": 0, "stale": 0, "down": 1}


def test_events_merge_newest_first_without_duplicates_and_filter() -> None:
    m = model()

    def ev(i: int, ts: float, sev: str, svc: str | None) -> Event:
        return Event(
            id=i, ts=ts, kind="k", severity=sev, service=svc, probe=None, message="m", evidence={}
        )  # type: ignore[arg-type]

    m.polled(
        "web-1",
        host_status("web-1"),
        [ev(1, NOW, "info", None), ev(2, NOW + 2, "critical", "web")],
        NOW,
    )
    m.polled("db-1", host_status("db-1"), [ev(1, NOW + 1, "warning", "pg")], NOW)
    # the same events delivered again (a retried poll) are not added twice
    m.polled("web-1", host_status("web-1"), [ev(2, NOW + 2, "critical", "web")], NOW)
    merged = [(h, e.id) for h, e in m.merged_events()]
    assert merged == [("web-1", 2), ("db-1", 1), ("web-1", 1)]
    assert [(h, e.id) for h, e in m.merged_events(severity="warning")] == [
        ("web-1", 2),
        ("db-1", 1),
    ]
    assert [(h, e.id) for h, e in m.merged_events(host="db-1")] == [("db-1", 1)]
    assert [(h, e.id) for h, e in m.merged_events(service="web")] == [("web-1", 2)]


def test_age_is_short_and_readable() -> None:
    assert [age(s) for s in (0, 42, 89, 90, 3599, 7200, 200000)] == [
        "0s", "42s", "89s", "1m", "59m", "2h", "2d",
    ]  # fmt: skip
