"""`hadeck-agent`: run the daemon, check its config and audit log, act through the agent.

The acting subcommands (restart, switchover, operations, ...) ask the local
agent's API with its token, so its locks and audit apply (agent/ctl.py).

Exit codes: 0 fine, 1 runtime failure (cannot start, audit chain broken),
2 invalid input (config problems, bad usage).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

# httpx imports its command-line client (click, rich, pygments) when present, which the
# daemon never uses: 3 MB of resident memory on every host. Marking the module absent makes
# httpx fall back to its stub, as it does when those extras are not installed.
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]

from agent import __version__, audit, config, ctl  # noqa: E402
from agent.config import ConfigError  # noqa: E402


def _check_config(args: argparse.Namespace) -> int:
    try:
        cfg = config.load(args.file)
    except ConfigError as exc:
        if args.json:
            print(json.dumps({"ok": False, "problems": [p.__dict__ for p in exc.problems]}))
        else:
            for problem in exc.problems:
                print(problem)
        return 2
    if args.json:
        print(
            json.dumps(
                {
                    "ok": True,
                    "probes": len(cfg.probes),
                    "services": len(cfg.services),
                    "runbooks": len(cfg.runbooks),
                    "groups": len(cfg.groups),
                }
            )
        )
    else:
        print(
            f"{config.printable(args.file)}: ok ({len(cfg.probes)} probes, "
            f"{len(cfg.services)} services, {len(cfg.runbooks)} runbooks, {len(cfg.groups)} groups)"
        )
    return 0


def _run(args: argparse.Namespace) -> int:
    # FastAPI asks of every response model whether it is a pydantic v1 class by importing
    # pydantic.v1: 1.8 MB of a 60 MB budget, for a check that is always "no" here (the
    # agent has no v1 models). Refusing the import makes FastAPI's check answer "no" at once.
    sys.modules.setdefault("pydantic.v1", None)  # type: ignore[arg-type]
    from agent.api.server import StartupError  # the web stack loads only when running
    from agent.daemon import Agent

    try:
        cfg = config.load(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, cfg.agent.log_level.upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("apscheduler", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        asyncio.run(Agent(cfg, Path(args.config)).run())
    except StartupError as exc:
        print(f"hadeck-agent: {exc}", file=sys.stderr)
        return 1
    return 0


def _audit_verify(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.exists():
        print(f"{path}: no such file", file=sys.stderr)
        return 2
    count, broken = audit.verify(path)
    if args.json:
        print(
            json.dumps(
                {
                    "ok": broken is None,
                    "records": count,
                    "broken": broken.__dict__ if broken else None,
                }
            )
        )
    elif broken is None:
        print(f"{path}: ok, {count} records, chain intact")
    else:
        print(
            f"{path}: line {broken.line}: {broken.reason} "
            f"(the {count} records before it are intact)"
        )
    return 0 if broken is None else 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="hadeck-agent", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"hadeck-agent {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the agent in the foreground")
    run.add_argument("--config", required=True, help="agent config file (YAML)")
    run.set_defaults(func=_run)

    check = sub.add_parser("check-config", help="validate a config file; exit 2 if invalid")
    check.add_argument("file")
    check.add_argument("--json", action="store_true", help="machine-readable output")
    check.set_defaults(func=_check_config)

    aud = sub.add_parser("audit", help="audit log tools")
    aud_sub = aud.add_subparsers(dest="audit_command", required=True)
    verify = aud_sub.add_parser(
        "verify", help="check the hash chain; exit 1 at the first broken record"
    )
    verify.add_argument("file", help="audit log (default location: STATE_DIR/audit.jsonl)")
    verify.add_argument("--json", action="store_true", help="machine-readable output")
    verify.set_defaults(func=_audit_verify)
    ctl.add_subcommands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
