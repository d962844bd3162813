"""HA groups with real agents: one primary, handovers, and never two primaries at once.

Every scenario runs under the split-brain checker, which asks all members at the
same moment, every 50 ms, and fails the test on any round with two 200s.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.failover.lease_sqlite import SqliteLeaseStore
from agent.schema import GroupActionResult
from console import actions
from console.agent_client import AgentClient
from console.transport.local import LocalTransport
from tests.support.etcd import EtcdServer
from tests.support.groups import (
    GROUP,
    SplitBrainChecker,
    Start,
    new_primary,
    one_primary,
    primary_again,
)
from tests.support.haproxy import Backend, HaproxyProcess, Server
from tests.support.proxy import BlackHoleProxy
from tests.support.wait import wait_for


def test_one_member_becomes_primary_with_a_fencing_token(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members):
        primary = wait_for(lambda: one_primary(members), 20, "a primary")
        token = int(primary.role_file.read_text().split()[1])
        st = primary.status()
        assert st["role"] == "primary" and st["token"] == token and st["leader"] == primary.name
        metrics = primary.agent.text("/metrics", public=True)
        role = f'hadeck_group_role{{group="pg",member="{primary.name}",role="primary"}} 1.0'
        assert role in metrics
        assert 'hadeck_group_promotions_total{group="pg",kind="failover"} 1.0' in metrics
        # The routing answer carries its margin: at most ttl - loop_wait (3 s - 0.5 s).
        url = f"{primary.agent.public_url}/groups/{GROUP}/primary"
        left = float(httpx.get(url, timeout=2).headers["X-Hadeck-Lease-Valid"])
        assert 0 < left <= 2.5
        others = [m for m in members if m is not primary]
        for m in others:
            r = httpx.get(f"{m.agent.public_url}/groups/{GROUP}/primary", timeout=2)
            assert r.status_code == 503 and "X-Hadeck-Lease-Valid" not in r.headers
            wait_for(lambda m=m: m.status()["leader"] == primary.name, 10, f"{m.name} sees leader")
            assert m.role_file.read_text().strip() == "standby"


def test_killed_service_on_the_primary_hands_over_fast(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members) as checker:
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        old_token = first.status()["token"]
        first.service.kill()
        second = new_primary(members, first, 15)
        assert second.status()["token"] > old_token
        demoted = first.agent.wait_event("group_demoted")
        assert "service db is down" in demoted["message"] and demoted["evidence"]["released"]
        promoted = second.agent.wait_event("group_promoted")
        assert promoted["evidence"]["from"] == first.name
        assert {c["member"] for c in promoted["evidence"]["candidates"]} >= {second.name}
        history = second.agent.get(f"/api/v1/groups/{GROUP}/history")
        assert history[0]["from_member"] == first.name and history[0]["to_member"] == second.name
        assert checker.rounds > 10


def test_a_killed_primary_agent_is_replaced_when_its_lease_expires(
    group: Start, store: dict[str, Any]
) -> None:
    # etcd counts a lease's time left in whole seconds: a standby tells an expiry from a
    # revoke only when the margin (loop_wait) covers that rounding (lease.certainly_free).
    loop_wait = 1.0 if store["kind"] == "etcd" else 0.5
    ttl, store_timeout = 3 * loop_wait + 1.0, 1.0  # the least check-config allows
    members = group(ttl=f"{ttl:g}s", loop_wait=f"{loop_wait:g}s")
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        killed_at = time.time()
        first.agent.kill()
        second = new_primary(members, first, 15)
        promoted = second.agent.wait_event("group_promoted")
        assert promoted["evidence"]["from"] == first.name
        # No release happened: the standby waited for the lease to expire. The primary last
        # renewed at most one loop_wait before it died (a second for a late renewal step), so
        # the lease outlived it by at least ttl - 2 x loop_wait; a release would have let a
        # standby in within a quarter second.
        took_over = promoted["ts"] - killed_at
        assert ttl - 2 * loop_wait <= took_over, f"promoted {took_over:.2f}s after the kill"
        # ...and no later than the standby's next step after the expiry, its rank's wait and
        # etcd's expiry sweep (0.5 s), with a second for hooks and a loaded machine.
        assert took_over <= ttl + loop_wait + 0.5 + 0.5 + 1.0, f"promoted after {took_over:.2f}s"
        # detect: from this standby seeing the key gone to its acquire: at most the wait of
        # its rank (a quarter second per better-ranked member) and one store read.
        detect = promoted["evidence"]["steps"]["detect"]
        assert 0 <= detect <= (len(members) - 1) * min(0.25, loop_wait / 2) + store_timeout
        # An expiry is told from a vanished lease: nobody waited a second ttl.
        assert promoted["evidence"]["steps"]["wait"] == 0
        assert not second.agent.events("group_lease_vanished")


def test_a_frozen_primary_comes_back_demoted_and_never_primary_again(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members) as checker:
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        first.agent.freeze()
        try:
            second = new_primary(members, first, 20)
        finally:
            first.agent.thaw()
        wait_for(lambda: first.status()["role"] == "standby", 10, "the frozen one to demote")
        demoted = first.agent.wait_event("group_demoted")
        assert "could not be renewed" in demoted["message"] and not demoted["evidence"]["released"]
        assert first.role_file.read_text().strip() == "standby"
        assert one_primary(members) is second
        # Watched for one more lease lifetime (ttl 3 s) after the thawed member demoted.
        seen = checker.rounds
        wait_for(lambda: checker.rounds >= seen + 3 / checker.period, 30, "a ttl of rounds")
    assert [name for _, name in checker.timeline if name][:1] == [first.name]
    # Once the new primary took over, the old one never answered 200 again.
    assert primary_again(checker.timeline) == [], checker.timeline
    assert checker.timeline[-1][1] == second.name


def test_switchover_to_a_named_standby_and_refusals(group: Start, store: dict[str, Any]) -> None:
    members = group()
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        target = next(m for m in members if m is not first)
        for m in members:
            wait_for(lambda m=m: len(m.status()["members"]) == 3, 10, f"{m.name} sees every member")
        bad = first.agent.post(f"/api/v1/groups/{GROUP}/switchover", json={"to": "nobody"})
        assert bad.status_code == 409 and "no fresh member record" in bad.json()["error"]
        r = target.agent.post(
            f"/api/v1/groups/{GROUP}/switchover",
            actor="alice",
            json={"to": target.name, "reason": "kernel upgrade on " + first.name},
        )
        op = target.agent.finished(r)
        assert (op["type"], op["actor"], op["state"]) == ("group_switchover", "alice", "succeeded")
        result = op["result"]
        assert result["kind"] == "group_action" and result["ok"], op
        assert (result["from_member"], result["to_member"]) == (first.name, target.name)
        assert one_primary(members) is target
        history = target.agent.get(f"/api/v1/groups/{GROUP}/history")[0]
        assert (history["kind"], history["actor"]) == ("switchover", "alice")
        assert set(history["steps"]) == {"detect", "wait", "acquire", "promote"}
        assert history["steps"]["wait"] == 0  # released, not vanished: nothing to wait out
        if store["kind"] == "sqlite":
            # The old holder's release vouched for its own key only: the new primary
            # cleared it before promoting, so it cannot vouch for the new key.
            flags = asyncio.run(SqliteLeaseStore(Path(store["path"])).get_flag(GROUP, "released"))
            assert flags is None
        # The operation's id is in its audit record and in its events.
        audit = target.agent.get("/api/v1/audit")
        done = [a for a in audit if a["action"] == "group_switchover" and a["actor"] == "alice"]
        assert [a["params"].get("operation") for a in done] == [op["id"]]
        for kind in ("group_switchover_requested", "group_switchover_finished"):
            assert target.agent.wait_event(kind)["evidence"]["operation"] == op["id"]
        metrics = target.agent.text("/metrics")
        assert 'hadeck_actions_total{action="group_switchover",result="ok"} 1.0' in metrics
        # The agents' own steps are journaled too: the promotion with the operator who asked,
        # the demotion by the agent, each an audit record, an actions row and a count.
        promoted = [a for a in audit if a["action"] == "group_promote"]
        assert promoted[-1]["actor"] == "alice" and promoted[-1]["result"]["ok"]
        assert 'hadeck_actions_total{action="group_promote",result="ok"}' in metrics
        demoted = wait_for(
            lambda: [a for a in first.agent.get("/api/v1/audit") if a["action"] == "group_demote"],
            10,
            "the demotion's audit record",
        )
        assert demoted[-1]["actor"] == "hadeck-agent"
        assert "switchover" in demoted[-1]["params"]["reason"]
        # Back again from the command line, which follows the operation to its end.
        back = subprocess.run(
            [sys.executable, "-m", "agent.cli", "switchover", GROUP, "--to", first.name,
             "--json", "--config", str(first.agent.config_path)],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert back.returncode == 0, back.stderr
        lines = [json.loads(line) for line in back.stdout.splitlines()]
        assert lines[0]["state"] == "running" and lines[-1]["state"] == "succeeded", lines
        assert lines[-1]["result"]["to_member"] == first.name
        wait_for(lambda: one_primary(members) is first, 10, "the switchover back")


def test_a_dry_run_answers_the_agents_plan_and_changes_nothing(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        for m in members:
            wait_for(lambda m=m: len(m.status()["members"]) == 3, 10, f"{m.name} sees every member")
        standbys = [m for m in members if m is not first]
        path = f"/api/v1/groups/{GROUP}/switchover"
        audited = len(first.agent.get("/api/v1/audit"))
        plan = first.agent.post(path, json={"dry_run": True}).json()
        # Equal lag: the higher priority (m1 100, m2 99, m3 98) is the agents' choice.
        best = min(standbys, key=lambda m: int(m.name[1:]))
        assert (plan["kind"], plan["ok"], plan["status"]) == ("plan", True, 202), plan
        assert (plan["from_member"], plan["to_member"]) == (first.name, best.name)
        assert [c["member"] for c in plan["candidates"]] == sorted(m.name for m in standbys)
        assert [c["rank"] for c in plan["candidates"]] == [1, 2]
        named = first.agent.post(path, json={"dry_run": True, "to": standbys[1].name}).json()
        assert named["to_member"] == standbys[1].name
        assert named["candidates"][0] == {**named["candidates"][0], "rank": 1}
        assert named["candidates"][0]["member"] == standbys[1].name
        refused = first.agent.post(path, json={"dry_run": True, "to": "nobody"}).json()
        assert (refused["ok"], refused["status"]) == (False, 409)
        assert "no fresh member record" in refused["refusal"]
        path = f"/api/v1/groups/{GROUP}/failover"
        unconfirmed = first.agent.post(path, json={"dry_run": True}).json()
        assert (unconfirmed["status"], unconfirmed["confirm"]) == (400, GROUP), unconfirmed
        forced = first.agent.post(path, json={"dry_run": True, "confirm": GROUP})
        assert forced.status_code == 200, forced.text
        assert forced.json()["status"] == 409 and "is healthy" in forced.json()["refusal"]
        unknown = first.agent.post("/api/v1/groups/nosuch/pause", json={"dry_run": True}).json()
        assert (unknown["ok"], unknown["status"]) == (False, 404)
        # Nothing moved and nothing was audited: a plan is not an action.
        assert one_primary(members) is first
        assert not any(m.status()["request"] for m in members)
        assert not first.status()["paused"]
        assert len(first.agent.get("/api/v1/audit")) == audited


def test_the_console_shows_the_agents_plan_then_follows_the_operation(group: Start) -> None:
    """The console's path, against real agents: dry run, confirm what it said, 202, result."""
    members = group()
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        for m in members:
            wait_for(lambda m=m: len(m.status()["members"]) == 3, 10, f"{m.name} sees every member")
        other = next(m for m in members if m is not first)
        a = other.agent
        client = AgentClient(LocalTransport(a.url, a.state_dir / "token"))
        gs = next(g for g in client.status().groups if g.name == GROUP)
        asked = actions.switchover(other.name, gs, None)
        plan = actions.with_agent_plan(asked, client.plan(asked.path, "dave", 10, asked.body))
        chosen = plan.body["to"]
        assert chosen in {m.name for m in members} - {first.name}
        assert plan.title == f"switchover {GROUP} from {first.name} to {chosen}"
        outcome = actions.execute(client, plan, "dave", "from the console")
        assert outcome.ok, outcome.message
        assert isinstance(outcome.result, GroupActionResult)
        assert outcome.result.to_member == chosen and outcome.message.startswith(chosen)
        assert one_primary(members).name == chosen


def test_a_cancelled_switchover_is_journaled_and_leaves_one_primary(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        for m in members:
            wait_for(lambda m=m: len(m.status()["members"]) == 3, 10, f"{m.name} sees every member")
        path = f"/api/v1/groups/{GROUP}/switchover"
        r = first.agent.post(path, actor="carol", json={})
        assert r.status_code == 202, r.text
        op_id = r.json()["id"]
        # One handover at a time: a second is refused while the first is pending.
        again = members[1].agent.post(path, actor="dave", json={})
        assert again.status_code == 409 and "still in progress" in again.json()["error"]
        plan = first.agent.post(
            f"/api/v1/operations/{op_id}/cancel", actor="carol", json={"dry_run": True}
        ).json()
        assert plan["kind"] == "plan" and "withdraw the handover request" in plan["steps"][1]
        cancel = first.agent.post(
            f"/api/v1/operations/{op_id}/cancel", actor="carol", json={"reason": "wrong group"}
        )
        assert cancel.status_code == 200, cancel.text
        op = cancel.json()
        message = op["result"]["message"]
        audit = first.agent.get("/api/v1/audit")
        (record,) = [a for a in audit if a["action"] == "operation_cancel" and a["target"] == op_id]
        # Four honest endings, by how far the handover had gone when the cancel came.
        if record["result"]["state_before"] == "succeeded":  # it finished first: no change
            assert op["state"] == "succeeded" and not record["result"]["ok"]
        elif op["state"] == "succeeded":  # it finished while the cancel was landing
            assert not record["result"]["ok"] and "is primary after" in message
        else:
            assert op["state"] == "cancelled" and record["result"]["ok"], op
            assert ("withdrawn; nothing was handed over" in message) or ("too late" in message)
        wait_for(lambda: one_primary(members), 20, "one primary")
        if "nothing was handed over" in message:
            assert one_primary(members) is first
        wait_for(lambda: not any(m.status()["request"] for m in members), 20, "no request")
        audit = first.agent.get("/api/v1/audit")
        done = [a for a in audit if a["action"] == "group_switchover" and a["actor"] == "carol"]
        assert [(a["params"]["operation"], a["result"]["ok"]) for a in done] == [
            (op_id, op["state"] == "succeeded")
        ]
        # The cancel itself goes through the journal: counted, and an event naming it.
        result = "ok" if record["result"]["ok"] else "failed"
        counted = f'hadeck_actions_total{{action="operation_cancel",result="{result}"}} 1.0'
        assert counted in first.agent.text("/metrics")
        assert first.agent.wait_event("operation_cancel")["evidence"]["operation"] == op_id


def test_paused_group_takes_no_automatic_action_until_resumed(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        r = first.agent.post(f"/api/v1/groups/{GROUP}/pause", json={"reason": "maintenance"})
        assert r.status_code == 200 and r.json()["ok"]
        for m in members:
            wait_for(lambda m=m: m.status()["paused"], 10, f"{m.name} sees the pause")
        first.service.kill()
        # Held: for three lease lifetimes nobody takes over and the key stays where it is.
        held = wait_for(
            lambda: first.agent.events("service_down") and first.status()["leader"] == first.name,
            10,
            "the service to be seen down",
        )
        assert held
        refused = members[1].agent.post(f"/api/v1/groups/{GROUP}/switchover", json={})
        assert refused.status_code == 409 and "paused" in refused.json()["error"]
        for m in members:
            assert m.status()["leader"] == first.name
        r = first.agent.post(f"/api/v1/groups/{GROUP}/resume", json={})
        assert r.status_code == 200
        second = wait_for(
            lambda: (p := one_primary(members)) and p is not first and p,
            15,
            "failover after resume",
        )
        assert second is not first


def test_forced_failover_needs_the_group_name_and_no_healthy_primary(group: Start) -> None:
    members = group()
    with SplitBrainChecker(members):
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        other = next(m for m in members if m is not first)
        for m in members:
            wait_for(lambda m=m: len(m.status()["members"]) == 3, 10, f"{m.name} sees all")
        path = f"/api/v1/groups/{GROUP}/failover"
        no_confirm = other.agent.post(path, json={})
        assert no_confirm.status_code == 400 and "confirm" in no_confirm.json()["error"]
        healthy = other.agent.post(path, json={"confirm": GROUP})
        assert healthy.status_code == 409 and "use a switchover" in healthy.json()["error"]
        # The primary's service is down but the group is paused: only an operator can move it.
        first.agent.post(f"/api/v1/groups/{GROUP}/pause", json={})
        first.service.kill()
        wait_for(
            lambda: (
                not next(r for r in other.status()["members"] if r["member"] == first.name)[
                    "healthy"
                ]
            ),
            10,
            "the primary's record to say unhealthy",
        )
        forced = other.agent.post(
            path, actor="bob", json={"confirm": GROUP, "reason": "primary disk dead"}
        )
        op = other.agent.finished(forced)
        assert op["state"] == "succeeded" and op["result"]["ok"], op
        assert one_primary(members) is other
        history = other.agent.get(f"/api/v1/groups/{GROUP}/history")[0]
        assert (history["kind"], history["actor"], history["to_member"]) == (
            "failover",
            "bob",
            other.name,
        )


def vanish(etcd: EtcdServer, fault: str) -> None:
    """Make the group's leader key disappear from etcd other than by expiry."""
    key = base64.b64encode(f"/hadeck/{GROUP}/leader".encode()).decode()
    if fault == "wiped":  # etcd lost its data: restored from nothing, or a new cluster
        etcd.kill()
        shutil.rmtree(etcd.data_dir)
        etcd.start()
        return
    with httpx.Client(base_url=etcd.url, timeout=5, trust_env=False) as c:
        if fault == "delete":
            assert c.post("/v3/kv/deleterange", json={"key": key}).json().get("deleted") == "1"
            return
        (kv,) = c.post("/v3/kv/range", json={"key": key}).json()["kvs"]
        assert c.post("/v3/lease/revoke", json={"ID": kv["lease"]}).status_code == 200


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
@pytest.mark.parametrize("fault", ["revoke", "delete", "wiped"])
def test_a_vanished_lease_is_waited_out_while_its_cut_off_holder_may_serve(
    group: Start, etcd: EtcdServer, store: dict[str, Any], fault: str
) -> None:
    """The primary is cut off from etcd, so it cannot learn that its key is gone and stays
    primary until its own deadline; a standby that took the free key at once would be a
    second primary. The standbys wait a full ttl from their last sight of the key."""
    ttl = 3.0
    with contextlib.ExitStack() as stack:
        proxies = [stack.enter_context(BlackHoleProxy(etcd.client_port)) for _ in range(3)]
        members = group(each=[{"store": {**store, "endpoints": [p.url]}} for p in proxies])
        with SplitBrainChecker(members):
            first = wait_for(lambda: one_primary(members), 20, "a primary")
            for m in members:
                wait_for(lambda m=m: m.status()["leader"] == first.name, 10, f"{m.name} sees it")
            proxies[members.index(first)].cut()
            vanish(etcd, fault)
            gone = time.time()
            second = new_primary(members, first, 20)
            promoted = second.agent.wait_event("group_promoted")
            assert promoted["evidence"]["from"] == first.name
            # It waited out the holder's deadline: up to ttl - loop_wait after the cut.
            assert promoted["evidence"]["steps"]["wait"] > 0, promoted["evidence"]["steps"]
            assert promoted["ts"] - gone >= ttl - 1.0, promoted["ts"] - gone
            vanished = second.agent.wait_event("group_lease_vanished")
            assert vanished["evidence"]["holder"] == first.name
            assert "vanished" in vanished["message"], vanished["message"]
            proxies[members.index(first)].heal()
            # Back in touch, the old primary finds its key gone and stays a standby.
            wait_for(lambda: first.status()["leader"] == second.name, 15, "old primary sees it")
            assert first.role_file.read_text().strip() == "standby"


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_etcd_outage_promotes_nobody_and_the_primary_steps_down_in_time(
    group: Start, etcd: EtcdServer
) -> None:
    members = group()
    with SplitBrainChecker(members) as checker:
        first = wait_for(lambda: one_primary(members), 20, "a primary")
        etcd.stop()
        stopped = time.monotonic()
        # ttl 3 s: the primary stops answering 200 at its guard time, before the lease ends.
        wait_for(lambda: one_primary(members) is None, 10, "the primary to step down")
        assert time.monotonic() - stopped < 3.0
        demoted = first.agent.wait_event("group_demoted")
        assert "could not be renewed" in demoted["message"]
        # While etcd is away, nobody is promoted: no key can be taken.
        for m in members:
            m.agent.wait_event("group_store_unreachable")
        assert all(len(m.agent.events("group_promoted")) <= (m is first) for m in members)
        etcd.start()
        wait_for(lambda: one_primary(members), 30, "a primary once etcd is back")
        # The checker samples on its own thread: wait for a round taken after the promotion.
        wait_for(checker.current, 5, "the checker to see the primary")


@pytest.mark.parametrize("store", ["etcd"], indirect=True)
def test_haproxy_follows_the_primary_through_failovers(
    group: Start, start_haproxy: Callable[[list[Backend]], HaproxyProcess]
) -> None:
    members = group()
    backend = Backend(
        "pg",
        f"/groups/{GROUP}/primary",
        [Server(m.name, m.service.port, m.agent.public_port) for m in members],
    )
    proxy = start_haproxy([backend])

    def served_by() -> str | None:
        try:
            r = httpx.get(f"http://127.0.0.1:{backend.port}/", timeout=1)
        except httpx.HTTPError:
            return None
        port = int(r.headers.get("x-demo-port", 0))
        return next((m.name for m in members if m.service.port == port), None)

    with SplitBrainChecker(members):
        current = wait_for(lambda: one_primary(members), 20, "a primary")
        for _ in range(2):
            wait_for(lambda c=current: proxy.runtime.up_servers("pg") == [c.name], 10, "haproxy up")
            wait_for(lambda c=current: served_by() == c.name, 10, "a client on the primary")
            current.service.kill()
            previous, current = current, new_primary(members, current)
            wait_for(
                lambda c=current: served_by() == c.name, 10, f"clients routed to {current.name}"
            )
            assert previous.name not in proxy.runtime.up_servers("pg")
            previous.service.start()


def test_a_member_agent_stops_cleanly(group: Start) -> None:
    """A SIGTERM ends every subsystem's stop, the group's hand-over first: exit 0, the
    `agent_stopped` event, nothing left half-stopped by a failure on the way."""
    (only,) = group(1)
    wait_for(lambda: only.primary(), 20, "a primary")
    assert only.agent.stop() == 0
    log = only.agent.log()
    assert "stopping the" not in log and "JobLookupError" not in log, log[-3000:]
    assert "agent_stopped" in log
