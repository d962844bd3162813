"""`hadeck-agent` subcommands that act: they ask the local agent, as `patronictl` does.

They never act on their own: each is a request to the agent's loopback API with
the token (read where the agent keeps it, so being allowed to act means being
in the `hadeck` group), naming the operator (the login name, or the sudo
caller's), so the agent's locks, refusals and audit always apply. A
long-running action answers with an operation, which the command follows to
its end with a progress line on a terminal, or one JSON object per change with
`--json`. Ctrl-C stops following, never the operation.

`--dry-run` asks the agent for its plan instead: what it would run, the standby
ranking of a handover, or why it would refuse; nothing changes.

Exit codes: 0 done (or would be done), 1 failed (or the agent cannot be reached),
2 refused (or would be) or bad usage, 130 stopped following.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import sys
import time
from typing import Any, TextIO

from agent import config
from agent.config import AgentConfig, ConfigError

FOLLOW_POLL = 0.5


class CtlError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def operator_name() -> str:
    """Who acts, for the audit log: the sudo caller if root through sudo, else the login."""
    if os.getuid() == 0 and (sudo := os.environ.get("SUDO_USER")):
        return sudo
    return pwd.getpwuid(os.getuid()).pw_name


class LocalAgent:
    """The agent's loopback API, as its config says where and with which token."""

    def __init__(self, cfg: AgentConfig, timeout: float) -> None:
        host, _, port = cfg.api.listen.rpartition(":")
        host = host.strip("[]")
        self.base = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
        self.cfg, self.timeout = cfg, timeout
        self._token: str | None = None

    def token(self) -> str:
        if self._token is None:
            try:
                self._token = config.read_secret(self.cfg.token_source)
            except PermissionError as exc:
                raise CtlError(
                    f"cannot read the API token ({exc.filename}): acting needs membership "
                    "of the agent's group (hadeck) or root",
                    2,
                ) from None
            except (OSError, KeyError) as exc:
                raise CtlError(f"cannot read the API token: {exc}", 2) from None
        return self._token

    def request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        import httpx  # here: the daemon, which shares this parser, does without it

        headers = {"X-Hadeck-Actor": operator_name()}
        if method != "GET":
            headers["Authorization"] = f"Bearer {self.token()}"
        try:
            r = httpx.request(
                method, self.base + path, json=body, headers=headers, timeout=self.timeout
            )
        except httpx.TimeoutException:
            raise CtlError(
                f"the agent at {self.base} did not answer within {self.timeout:g}s"
            ) from None
        except httpx.HTTPError as exc:
            raise CtlError(f"cannot reach the agent at {self.base}: {exc}") from None
        try:
            payload = r.json()
        except ValueError:
            payload = {"error": r.text[:300]}
        if r.status_code >= 400:
            message = payload.get("error") if isinstance(payload, dict) else str(payload)
            raise CtlError(f"the agent refused: {message}", 2 if r.status_code < 500 else 1)
        return payload


def _progress_line(op: dict[str, Any]) -> str:
    p = op.get("progress") or {}
    parts = [f"{op['type']} {op['target']} {op['state']}"]
    if p.get("fraction") is not None:
        filled = int(p["fraction"] * 20)
        parts.append(f"[{'#' * filled}{'.' * (20 - filled)}] {p['fraction'] * 100:.0f}%")
    if p.get("done") is not None and p.get("total"):
        parts.append(f"{p['done']}/{p['total']} {p.get('unit') or ''}".rstrip())
    if p.get("eta_seconds") is not None:
        parts.append(f"ETA {p['eta_seconds']:.0f}s")
    if p.get("message"):
        parts.append(p["message"])
    parts.append(f"{op['duration_seconds']:.1f}s")
    return "  ".join(parts)


def follow(agent: LocalAgent, op: dict[str, Any], as_json: bool, out: TextIO) -> int:
    """Poll the operation until it ends; 0 when it succeeded."""
    tty = out.isatty() and not as_json
    last: Any = None
    try:
        while True:
            view = {k: v for k, v in op.items() if k != "duration_seconds"}
            if as_json and view != last:
                print(json.dumps(op), file=out, flush=True)
            elif tty:
                print("\r\033[K" + _progress_line(op), end="", file=out, flush=True)
            elif view != last:
                print(_progress_line(op), file=out, flush=True)
            last = view
            if op["state"] not in ("running", "cancelling"):
                break
            time.sleep(FOLLOW_POLL)
            op = agent.request("GET", f"/api/v1/operations/{op['id']}")
    except KeyboardInterrupt:
        if tty:
            print(file=out)
        print(
            f"stopped following; {op['id']} goes on: hadeck-agent operation {op['id']} --follow",
            file=sys.stderr,
        )
        return 130
    if tty:
        print(file=out)
    if not as_json:
        outcome = op.get("error") or (op.get("result") or {}).get("message") or op["state"]
        print(f"{op['id']}: {op['state']}: {outcome}", file=out)
    return 0 if op["state"] == "succeeded" else 1


def _plan(plan: dict[str, Any], as_json: bool, out: TextIO) -> int:
    """A dry run's answer: what the agent would do, or why not; 0 if it would, else 2."""
    if as_json:
        print(json.dumps(plan), file=out)
    else:
        head = f"{plan['action']} {plan['target']}"
        if plan.get("refusal"):
            print(f"{head}: would be refused ({plan['status']}): {plan['refusal']}", file=out)
        else:
            print(f"{head}: would run:", file=out)
        for step in plan.get("steps", []):
            print(f"  {step}", file=out)
        for warning in plan.get("warnings", []):
            print(f"  ! {warning}", file=out)
        for c in plan.get("candidates", []):
            lag = "lag unknown" if c["lag"] is None else f"lag {c['lag']:.1f}s"
            rank = f"{c['rank']}." if c["rank"] else "-"
            print(
                f"  {rank} {c['member']} ({lag}, priority {c['priority']}): {c['note']}", file=out
            )
    return 0 if plan.get("ok") else 2


def _show(payload: Any, as_json: bool, out: TextIO) -> int:
    """A direct result (not an operation): print it and exit by its `ok`."""
    if as_json:
        print(json.dumps(payload), file=out)
    elif isinstance(payload, dict) and "message" in payload:
        print(payload["message"], file=out)
    ok = not isinstance(payload, dict) or payload.get("ok", True)
    return 0 if ok else 1


def run(args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    agent = LocalAgent(cfg, args.timeout)
    try:
        return _dispatch(agent, args, out)
    except CtlError as exc:
        print(f"hadeck-agent {args.command}: {exc}", file=sys.stderr)
        return exc.code


def _dispatch(agent: LocalAgent, args: argparse.Namespace, out: TextIO) -> int:
    c = args.command
    body: dict[str, Any] = {"reason": getattr(args, "reason", "") or ""}
    if c == "operations":
        ops = agent.request(
            "GET", "/api/v1/operations" + (f"?state={args.state}" if args.state else "")
        )
        if args.json:
            print(json.dumps(ops), file=out)
        for op in [] if args.json else ops:
            print(f"{op['id']}  {_progress_line(op)}", file=out)
        return 0
    if c == "operation":
        op = agent.request("GET", f"/api/v1/operations/{args.id}")
        if args.follow:
            return follow(agent, op, args.json, out)
        print(json.dumps(op) if args.json else _progress_line(op), file=out)
        return 0
    if c == "cancel":
        op = agent.request("POST", f"/api/v1/operations/{args.id}/cancel", {})
        print(json.dumps(op) if args.json else f"{op['id']}: {op['state']}", file=out)
        return 0 if op["state"] == "cancelled" else 1
    if c == "restart":
        path = f"/api/v1/services/{args.name}/restart"
    elif c == "runbook":
        path = f"/api/v1/runbooks/{args.name}/run"
    else:  # group actions
        if getattr(args, "to", None):
            body["to"] = args.to
        if getattr(args, "confirm", None):
            body["confirm"] = args.confirm
        path = f"/api/v1/groups/{args.group}/{c}"
    if args.dry_run:
        body["dry_run"] = True
    payload = agent.request("POST", path, body)
    if isinstance(payload, dict) and payload.get("kind") == "plan":
        return _plan(payload, args.json, out)
    if isinstance(payload, dict) and payload.get("kind") == "operation":
        if args.no_wait:
            print(json.dumps(payload) if args.json else payload["id"], file=out)
            return 0
        return follow(agent, payload, args.json, out)
    return _show(payload, args.json, out)


def add_subcommands(sub: Any) -> None:
    """The acting subcommands, added to `hadeck-agent`'s parser."""

    def common(p: argparse.ArgumentParser, acts: bool = True) -> None:
        p.add_argument(
            "--config",
            default="/etc/hadeck/agent.yaml",
            help="the agent's config, for its API address and token (default: %(default)s)",
        )
        p.add_argument("--json", action="store_true", help="JSON output (one line per change)")
        p.add_argument(
            "--timeout", type=float, default=30.0, help="per request, seconds (default 30)"
        )
        if acts:
            p.add_argument("--reason", default="", help="why, for the audit log")
            p.add_argument(
                "--no-wait", action="store_true", help="print the operation id, do not follow"
            )
            p.add_argument(
                "--dry-run",
                action="store_true",
                help="change nothing: print the agent's plan (what would run, or why not)",
            )
        p.set_defaults(func=run)

    p = sub.add_parser("restart", help="restart a service through the agent (audited)")
    p.add_argument("name")
    common(p)
    p = sub.add_parser("runbook", help="run a configured runbook through the agent")
    p.add_argument("name")
    common(p)
    p = sub.add_parser("switchover", help="planned handover of an HA group's primary")
    p.add_argument("group")
    p.add_argument("--to", help="the standby to promote (default: the best)")
    common(p)
    p = sub.add_parser("failover", help="forced promotion when no healthy primary exists")
    p.add_argument("group")
    p.add_argument("--to", help="the member to promote (default: this one)")
    p.add_argument("--confirm", required=True, help="the group's name, typed")
    common(p)
    for name, text in (("pause", "maintenance: no automatic failover"), ("resume", "end pause")):
        p = sub.add_parser(name, help=text)
        p.add_argument("group")
        common(p)
    p = sub.add_parser("operations", help="list recent long-running operations")
    p.add_argument("--state", help="only those in this state (running, failed, ...)")
    common(p, acts=False)
    p = sub.add_parser("operation", help="show one operation, or --follow it to its end")
    p.add_argument("id")
    p.add_argument("--follow", action="store_true")
    common(p, acts=False)
    p = sub.add_parser("cancel", help="cancel a running operation")
    p.add_argument("id")
    common(p, acts=False)
