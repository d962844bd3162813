"""The agent, as a real process, detects a killed service and brings it back, or gives up."""

from __future__ import annotations

import os
import signal
import threading

import psutil
import pytest

from tests.support.agent import DemoService, http_probe, restartable
from tests.support.wait import wait_for

pytestmark = pytest.mark.integration


def test_killed_service_is_detected_with_evidence_and_restarted(start_agent, demo_service):
    agent = start_agent(
        {
            "probes": {"web": http_probe(demo_service)},
            "services": {"web": restartable(demo_service, ["web"])},
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    old_pid = demo_service.kill()

    down = agent.wait_event("service_down", service="web")
    # The evidence says why: the failed results that crossed fall=2.
    results = down["evidence"]["probes"]["web"]["results"]
    assert len(results) == 2 and not any(r["ok"] for r in results)
    assert "connect" in down["message"].lower()

    agent.wait_event("recovery_recovered", service="web")
    wait_for(
        lambda: demo_service.alive() and demo_service.pid() != old_pid, 10, "a new service pid"
    )
    status = agent.service("web")
    assert status["state"] == "up"
    assert status["recovery"]["history"][-1]["result"] == "recovered"

    # The automatic recovery is in the audit log, by the agent, with its command and result.
    audit = agent.get("/api/v1/audit")
    record = next(r for r in audit if r["action"] == "recovery")
    assert record["actor"] == "hadeck-agent" and record["target"] == "web"
    assert record["result"]["ok"] is True
    assert record["params"] == {"attempt": 1, "step": "restart"}


def test_gives_up_after_its_budget_and_resumes_when_service_returns(
    start_agent, demo_service, tmp_path
):
    broken = {"command": ["false"], "timeout": "5s"}
    agent = start_agent(
        {
            "probes": {"web": http_probe(demo_service)},
            "services": {
                "web": {
                    "probes": ["web"],
                    "restart": broken,
                    "recovery": {
                        "steps": ["restart"],
                        "verify_window": "1s",
                        "max_attempts": 3,
                        "window": "1h",
                        "backoff": {"initial": "100ms", "max": "200ms"},
                    },
                }
            },
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    demo_service.kill()

    gave_up = agent.wait_event("recovery_gave_up", service="web", timeout=20)
    assert gave_up["severity"] == "critical"
    assert len(agent.events("recovery_failed", service="web")) == 3
    recovery = agent.service("web")["recovery"]
    assert recovery["state"] == "gave_up"
    assert recovery["attempts_in_window"] == 3
    assert recovery["next_attempt_at"] is not None

    # A reload keeps the verdict without raising (and auditing) it a second time.
    agent.signal(signal.SIGHUP)
    reloaded = agent.wait_event("config_reloaded")
    assert reloaded["message"] == "config reloaded: probes +0 -0 ~0"
    wait_for(
        lambda: agent.service("web")["recovery"]["state"] == "gave_up", 10, "gave_up after reload"
    )
    assert len(agent.events("recovery_gave_up", service="web")) == 1

    # Not a dead end: once the service is back (an operator fixed it), the ladder re-arms.
    demo_service.start()
    wait_for(lambda: agent.service("web")["recovery"]["state"] == "idle", 10, "ladder idle")
    assert agent.service("web")["state"] == "up"
    assert len(agent.events("recovery_failed", service="web")) == 3


def test_second_step_of_the_ladder_runs_when_the_first_does_not_help(start_agent, demo_service):
    agent = start_agent(
        {
            "probes": {"web": http_probe(demo_service)},
            "services": {
                "web": {
                    "probes": ["web"],
                    "restart": {
                        "command": ["true"],
                        "timeout": "5s",
                    },  # "succeeds" but changes nothing
                    "recovery": {
                        "steps": ["restart", "bring-back"],
                        "verify_window": "1s",
                        "backoff": {"initial": "100ms", "max": "200ms"},
                    },
                }
            },
            "runbooks": {
                "bring-back": {
                    "description": "start it for real",
                    "steps": [{"command": demo_service.start_argv(), "timeout": "10s"}],
                }
            },
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    demo_service.kill()
    recovered = agent.wait_event("recovery_recovered", service="web", timeout=20)
    assert recovered["evidence"]["step"] == "bring-back"
    failed = agent.events("recovery_failed", service="web")
    assert [e["evidence"]["step"] for e in failed] == ["restart"]


def test_dependent_is_not_restarted_while_its_dependency_is_down(start_agent, services, tmp_path):
    db, app = DemoService(tmp_path), DemoService(tmp_path)
    services.extend([db, app])
    db.start()
    app.start()
    agent = start_agent(
        {
            "probes": {"db": http_probe(db), "app": http_probe(app)},
            "services": {
                # db has no recovery: it stays down until the test brings it back.
                "db": {"probes": ["db"]},
                "app": {**restartable(app, ["app"]), "depends_on": ["db"]},
            },
        }
    )
    wait_for(lambda: agent.service("app")["state"] == "up", 10, "app up")
    db.kill()
    agent.wait_event("service_down", service="db")
    app.kill()
    held = agent.wait_event("recovery_held", service="app")
    assert "depends on db" in held["message"]
    assert agent.service("app")["recovery"]["state"] == "held"
    assert not agent.events("recovery_started", service="app")

    db.start()
    agent.wait_event("recovery_recovered", service="app", timeout=20)
    assert agent.service("app")["state"] == "up"


def test_flapping_service_is_marked_and_recovery_held(start_agent, demo_service):
    agent = start_agent(
        {
            "probes": {
                "web": http_probe(
                    demo_service, fall=1, rise=1, flap={"window": "30s", "changes": 4}
                )
            },
            "services": {
                "web": restartable(
                    demo_service,
                    ["web"],
                    verify_window="200ms",
                    backoff={"initial": "5s", "max": "5s"},
                )
            },
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    # Make the service fail and heal in turns, as a flapping service does.
    for i in range(3):
        demo_service.fail_file.write_text("x")
        agent.wait_event("probe_down", probe="web") if i == 0 else wait_for(
            lambda n=i: len(agent.events("probe_down", probe="web")) > n, 10, "down again"
        )
        demo_service.fail_file.unlink()
        wait_for(lambda n=i: len(agent.events("probe_up", probe="web")) > n, 10, "up again")
        if agent.events("probe_flapping", probe="web"):
            break
    flapping = agent.wait_event("probe_flapping", probe="web")
    assert flapping["severity"] == "warning"
    probe = next(p for p in agent.get("/api/v1/probes") if p["name"] == "web")
    assert probe["flapping"] is True
    demo_service.fail_file.write_text("x")
    held = agent.wait_event("recovery_held", service="web")
    assert "flapping" in held["message"]
    metrics = agent.text("/metrics")
    assert 'hadeck_probe_flapping{probe="web"} 1.0' in metrics
    assert 'hadeck_recovery_state{service="web",state="held"} 1.0' in metrics


def test_agent_restart_keeps_events_and_recovery_budget(start_agent, demo_service, agents):
    agent = start_agent(
        {
            "probes": {"web": http_probe(demo_service)},
            "services": {"web": restartable(demo_service, ["web"])},
        }
    )
    wait_for(lambda: agent.service("web")["state"] == "up", 10, "web up")
    demo_service.kill()
    agent.wait_event("recovery_recovered", service="web")
    before = agent.events()
    results_before = {r["ts"] for r in probe(agent, "web")["recent"]}
    assert agent.stop() == 0

    agent.start()
    # The recent results shown right after the restart include those from before it.
    recent = {r["ts"] for r in probe(agent, "web")["recent"]}
    assert results_before & recent, (results_before, recent)
    after = agent.events()
    ids = {e["id"] for e in after}
    assert {e["id"] for e in before} <= ids, "events from before the restart are kept"
    assert agent.events("agent_stopped") and len(agent.events("agent_started")) == 2
    assert agent.service("web")["recovery"]["attempts_in_window"] == 1
    assert agent.service("web")["recovery"]["history"][-1]["result"] == "recovered"


def probe(agent, name):
    return next(p for p in agent.get("/api/v1/probes") if p["name"] == name)


def test_sigterm_ends_running_commands_and_exits_cleanly(start_agent, tmp_path):
    marker = tmp_path / "child.pid"
    agent = start_agent(
        {
            "runbooks": {
                "slow": {
                    "steps": [
                        {
                            "command": ["sh", "-c", f"echo $$ > {marker}; exec sleep 300"],
                            "timeout": "10m",
                        }
                    ]
                }
            },
        }
    )
    t = threading.Thread(target=lambda: agent.post("/api/v1/runbooks/slow/run"), daemon=True)
    t.start()
    pid = int(wait_for(lambda: marker.exists() and marker.read_text().strip(), 10, "child pid"))
    assert agent.stop() == 0
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "Traceback" not in agent.log()


def test_sighup_applies_a_valid_config_and_keeps_the_old_on_error(start_agent, demo_service):
    agent = start_agent({"probes": {"web": http_probe(demo_service)}})
    wait_for(lambda: agent.get("/api/v1/probes"), 10, "probes listed")

    agent.config["probes"]["tcp"] = {
        "kind": "tcp",
        "host": "127.0.0.1",
        "port": demo_service.port,
        "interval": "1s",
        "timeout": "500ms",
    }
    agent.write_config()
    agent.signal(signal.SIGHUP)
    agent.wait_event("config_reloaded")
    wait_for(
        lambda: {p["name"] for p in agent.get("/api/v1/probes")} == {"web", "tcp"},
        10,
        "new probe after reload",
    )

    agent.config["probes"]["tcp"]["port"] = 70000
    agent.config["probes"]["typo"] = {"kind": "tcp", "hots": "x", "port": 1}
    agent.write_config()
    agent.signal(signal.SIGHUP)
    rejected = agent.wait_event("config_reload_rejected")
    problems = rejected["evidence"]["problems"]
    assert any("probes.tcp.port" in p for p in problems)
    assert any("probes.typo.hots: unknown key" in p for p in problems)
    assert {p["name"] for p in agent.get("/api/v1/probes")} == {"web", "tcp"}
    assert agent.proc is not None and agent.proc.poll() is None


def test_sighup_applies_a_new_resource_sampling_interval(start_agent):
    agent = start_agent({"resources": {"interval": "1h", "mounts": ["/"]}})

    def sampled_at() -> float | None:
        return agent.get("/api/v1/status", recent=0)["resources"]["sampled_at"]

    first = wait_for(sampled_at, 10, "the first resource sample")
    agent.config["resources"]["interval"] = "200ms"
    agent.write_config()
    agent.signal(signal.SIGHUP)
    agent.wait_event("config_reloaded")
    # Within the old hour, only the new interval can bring two more samples.
    seen = wait_for(lambda: (s := sampled_at()) and s > first and s, 10, "a second sample")
    wait_for(lambda: sampled_at() > seen, 10, "a third sample")


def test_a_hung_probe_never_delays_the_others(start_agent, demo_service):
    agent = start_agent(
        {
            "probes": {
                "hung": {
                    "kind": "command",
                    "command": ["sleep", "60"],
                    "interval": "1s",
                    "timeout": "900ms",
                    "fall": 1,
                },
                "fast": http_probe(demo_service, interval="250ms", timeout="200ms"),
            },
        }
    )
    agent.wait_event("probe_down", probe="hung")

    # While the hung probe keeps timing out, the fast one keeps its own pace: 10 more runs
    # at 250 ms take 2.5 s; a fast probe stuck behind the 900 ms one would need 9.
    start = agent.probe_runs("fast", "success")
    wait_for(
        lambda: agent.probe_runs("fast", "success") >= start + 10,
        5,
        "10 more runs of the fast probe",
    )
    hung = next(p for p in agent.get("/api/v1/probes") if p["name"] == "hung")
    assert "timed out" in hung["last"]["detail"]


def test_a_hung_filesystem_strands_one_thread_and_starves_nothing(start_agent, tmp_path):
    # Opening a FIFO that no one writes blocks in the kernel, as a stat() on a dead NFS
    # mount does: the process probe's thread cannot come back, or be cancelled.
    fifo = tmp_path / "hung.pid"
    os.mkfifo(fifo)
    heartbeat = tmp_path / "heartbeat"
    heartbeat.touch()
    fast = {"interval": "250ms", "timeout": "200ms", "fall": 1, "rise": 1}
    agent = start_agent(
        {
            "probes": {
                "hung": {"kind": "process", "pidfile": str(fifo), **fast},
                "beat": {"kind": "file_age", "path": str(heartbeat), "max_age": "1h", **fast},
            },
        }
    )
    agent.wait_event("probe_down", probe="hung")

    # 40 runs of the hung probe: had each run stranded a thread of a shared pool, the
    # heartbeat probe's checks would long have been queued behind them.
    wait_for(lambda: agent.probe_runs("hung", "failure") >= 40, 30, "40 runs of the hung probe")
    assert agent.probe_runs("beat", "failure") == 0
    probes = {p["name"]: p for p in agent.get("/api/v1/probes")}
    assert probes["beat"]["state"] == "up"
    assert "has not returned" in probes["hung"]["last"]["detail"], probes["hung"]["last"]

    # A reload keeps the unchanged probe's read in flight: it starts no second one.
    threads = psutil.Process(agent.proc.pid).num_threads()
    for n in range(3):
        agent.signal(signal.SIGHUP)
        wait_for(lambda n=n: len(agent.events("config_reloaded")) > n, 10, "the reload")
        done = agent.probe_runs("hung", "failure")
        wait_for(
            lambda done=done: agent.probe_runs("hung", "failure") >= done + 4, 10, "more hung runs"
        )
    assert psutil.Process(agent.proc.pid).num_threads() <= threads + 1  # +1: a busy moment
    assert agent.probe_runs("beat", "failure") == 0

    # The stranded thread does not keep the agent from stopping.
    assert agent.stop(timeout=10) == 0


def test_a_check_that_takes_most_of_its_interval_loses_no_runs(start_agent):
    # Runs start on the agent's 250 ms tick: every 1.1 s on average, but most of them
    # only 1.0 s after the previous one, which this 1.02 s check has not finished yet.
    # Such a run must wait for it, not be skipped.
    agent = start_agent(
        {
            "probes": {
                "slow": {
                    "kind": "command",
                    "command": ["sleep", "1.02"],
                    "interval": "1100ms",
                    "timeout": "1090ms",
                }
            }
        }
    )

    wait_for(lambda: agent.probe_runs("slow", "success") >= 1, 10, "the first run")
    start = agent.probe_runs("slow", "success")
    # 8 runs take 8.8 s; skipping the runs that fall due 1.0 s after the previous start
    # made it 13 s or more.
    wait_for(lambda: agent.probe_runs("slow", "success") >= start + 8, 10.8, "8 more runs")
    assert "maximum number of running instances" not in agent.log()
