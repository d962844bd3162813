"""The groups view: every HA group the agents report, members primary first, one report chosen."""

from __future__ import annotations

from console.fleet import FleetModel
from tests.support.fake_fleet import NOW, group_members, group_status, host_status


def model(*, primary_seen: float = NOW, standby_seen: float = NOW) -> FleetModel:
    m = FleetModel(stale_after=10.0)
    for name in ("db-01", "db-04", "web-02"):
        m.add_host(name, {}, "fake")
    m.polled("db-01", host_status("db-01", groups=[group_status("db-01", "primary")]), [], NOW)
    m.polled("db-04", host_status("db-04", groups=[group_status("db-04", "standby")]), [], NOW)
    m.polled("web-02", host_status("web-02"), [], NOW)
    m.hosts["db-01"].last_seen = primary_seen
    m.hosts["db-04"].last_seen = standby_seen
    return m


def test_members_come_from_each_hosts_own_report_primary_first() -> None:
    [pg] = model().groups(NOW + 1)
    assert pg.name == "pg"
    assert [(x.member, x.host, x.role, x.routed) for x in pg.members] == [
        ("db-01", "db-01", "primary", True),
        ("db-04", "db-04", "standby", False),
    ]
    standby = pg.members[1]
    assert standby.lag == 0.4 and standby.priority == 50 and standby.healthy
    assert standby.note == "eligible" and standby.connection == "live"
    assert standby.key == "pg/db-04"
    # The group-wide state as the leader's host reports it.
    assert pg.reported_by == "db-01" and pg.fresh
    assert (pg.leader, pg.token, pg.lease_ttl_left, pg.paused) == ("db-01", 7, 8.5, False)
    assert pg.last_handover is not None and pg.last_handover.to_member == "db-01"
    assert pg.hosts() == ["db-01", "db-04"]


def test_a_silent_leader_host_gives_way_to_a_fresh_report() -> None:
    [pg] = model(primary_seen=NOW - 60).groups(NOW)
    assert pg.reported_by == "db-04" and pg.fresh
    assert pg.member("db-01") is not None
    assert pg.member("db-01").connection in ("stale", "down")  # type: ignore[union-attr]
    # Nobody fresh: the leader's last report again, marked as not fresh.
    [pg] = model(primary_seen=NOW - 60, standby_seen=NOW - 30).groups(NOW)
    assert pg.reported_by == "db-01" and not pg.fresh


def test_a_member_only_the_lease_store_knows_is_listed_without_a_host() -> None:
    m = FleetModel()
    m.add_host("db-04", {}, "fake")
    members = group_members()
    members[1] = members[1].model_copy(update={"lag": 30.0, "note": "lag 30s > max_lag 10s"})
    st = group_status("db-04", "standby", members)
    m.polled("db-04", host_status("db-04", groups=[st]), [], NOW)
    [pg] = m.groups(NOW)
    primary, standby = pg.members
    assert (primary.member, primary.host, primary.routed, primary.connection) == (
        "db-01",
        None,
        None,
        None,
    )
    assert standby.host == "db-04" and standby.note == "lag 30s > max_lag 10s"
    assert pg.hosts() == ["db-04"]


def test_standbys_rank_like_the_agents_rank_candidates() -> None:
    members = group_members()
    base = members[1]
    members += [
        base.model_copy(update={"member": "db-07", "lag": 0.1, "priority": 10}),
        base.model_copy(update={"member": "db-08", "lag": 0.1, "priority": 90}),
        base.model_copy(update={"member": "db-09", "lag": 0.0, "note": "service down"}),
        base.model_copy(update={"member": "db-10", "role": "promoting"}),
    ]
    m = FleetModel()
    m.add_host("db-01", {}, "fake")
    m.polled(
        "db-01", host_status("db-01", groups=[group_status("db-01", "primary", members)]), [], NOW
    )
    [pg] = m.groups(NOW)
    assert [x.member for x in pg.members] == ["db-01", "db-10", "db-08", "db-07", "db-04", "db-09"]


def test_no_groups_reported_means_no_groups() -> None:
    m = FleetModel()
    m.add_host("web-1", {}, "fake")
    m.add_host("never", {}, "fake")
    m.polled("web-1", host_status("web-1"), [], NOW)
    assert m.groups(NOW) == []
