"""Patroni, to measure hadeck against: the same servers, etcd, HAProxy, ttl and loop_wait.

Patroni comes from PyPI (`patroni[etcd3]`, `psycopg`) into a virtual environment of the
benchmark's own, made on first use under the run's directory; nothing of it is imported
here, it runs as its own processes, one per member, as the `postgres` user (PostgreSQL
refuses root). Each Patroni bootstraps its server itself (the first one initdb, the others
a basebackup), reaches etcd through its member's proxy (`use_proxies`: no discovery of
etcd's own address behind it), and answers HAProxy's check on `/primary`.

Settings chosen to match hadeck's run: the same ttl (at least 20 s: Patroni's etcd3 client
raises anything less to 20), loop_wait 2 s, retry_timeout 4 s (Patroni wants ttl >=
loop_wait + 2 x retry_timeout); quorum synchronous replication, ANY 1 of the
standbys (hadeck's cluster: ANY 1 of the members); pg_rewind, and a re-clone when it fails
(hadeck-pg's `reclone = true`); no watchdog (none may be armed on a shared machine; hadeck
runs without one too, its fencing process is not a watchdog).
"""

from __future__ import annotations

import os
import pwd
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from console.demo.component import Component, http_ok

PATRONI = "patroni[etcd3]==4.1.5"
PSYCOPG = "psycopg[binary]>=3.1"


def install(root: Path) -> Path:
    """A virtual environment with Patroni in it (kept for the next run); its `patroni`
    program. `root` must be readable by the postgres user: not under a 0700 directory."""
    venv = root / "patroni-venv"
    patroni = venv / "bin" / "patroni"
    if patroni.exists():
        return patroni
    # The system's Python, not this one: the postgres user runs it, and an interpreter
    # under root's home (pyenv) is out of its reach.
    python = "/usr/bin/python3" if Path("/usr/bin/python3").exists() else sys.executable
    subprocess.run([python, "-m", "venv", str(venv)], check=True, timeout=120)
    done = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "-q", PATRONI, PSYCOPG],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"pip install {PATRONI}: {done.stderr[-2000:]}")
    return patroni


def config(
    name: str,
    ttl: int,
    root: Path,
    data: Path,
    pg_port: int,
    api_port: int,
    etcd: str,
    bin_dir: Path,
    socket_dir: Path,
) -> dict[str, Any]:
    return {
        "scope": "bench",
        "name": name,
        "log": {"level": "INFO", "dir": str(root / name), "file_num": 2},
        "restapi": {"listen": f"127.0.0.1:{api_port}", "connect_address": f"127.0.0.1:{api_port}"},
        "etcd3": {"hosts": [etcd], "use_proxies": True, "protocol": "http"},
        "bootstrap": {
            "dcs": {
                "ttl": ttl,
                "loop_wait": 2,
                "retry_timeout": 4,
                "maximum_lag_on_failover": 1048576,
                "synchronous_mode": "quorum",
                "synchronous_node_count": 1,
                "postgresql": {
                    "use_pg_rewind": True,
                    "remove_data_directory_on_rewind_failure": True,
                    "remove_data_directory_on_diverged_timelines": True,
                    "parameters": {
                        "wal_level": "replica",
                        "hot_standby": "on",
                        "wal_log_hints": "on",
                        "max_wal_senders": 10,
                        "max_replication_slots": 10,
                        "wal_keep_size": "256MB",
                        "max_connections": 40,
                        "shared_buffers": "16MB",
                        "wal_receiver_status_interval": "1s",
                        "synchronous_commit": "on",
                    },
                },
            },
            "initdb": ["data-checksums", {"encoding": "UTF8"}],
        },
        "postgresql": {
            "listen": f"127.0.0.1:{pg_port}",
            "connect_address": f"127.0.0.1:{pg_port}",
            "data_dir": str(data),
            "bin_dir": str(bin_dir),
            "pgpass": str(root / name / "pgpass"),
            "authentication": {
                "superuser": {"username": "postgres", "password": "bench"},
                "replication": {"username": "postgres", "password": "bench"},
                "rewind": {"username": "postgres", "password": "bench"},
            },
            "parameters": {
                "unix_socket_directories": str(socket_dir),
                # Its server's log in the member's directory (Patroni's own output has none).
                "logging_collector": "on",
                "log_directory": str(root / name),
                "log_filename": "postgresql.log",
            },
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "local replication all trust",
                "host replication all 127.0.0.1/32 trust",
            ],
        },
        "watchdog": {"mode": "off"},
    }


class PatroniMember:
    """One member's Patroni, started as the postgres user in a session of its own (the
    server it starts is in a session of its own too: freezing Patroni leaves it running)."""

    def __init__(self, name: str, patroni: Path, cfg: dict[str, Any], root: Path) -> None:
        self.name = name
        self.api_port = int(cfg["restapi"]["listen"].rsplit(":", 1)[1])
        d = root / name
        d.mkdir(parents=True, exist_ok=True)
        path = d / "patroni.yml"
        path.write_text(yaml.safe_dump(cfg))
        pw = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        if pw is not None:
            for p in [d, *d.rglob("*")]:
                os.chown(p, pw.pw_uid, pw.pw_gid)
        argv = [str(patroni), str(path)]
        if pw is not None:
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]
        self.component = Component(
            f"patroni {name}",
            argv,
            d / "patroni.out",
            http_ok(f"http://127.0.0.1:{self.api_port}/liveness"),
            env={**os.environ, "HOME": str(d)},
            cwd=d,
            start_timeout=120.0,
            stop_timeout=30.0,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"
