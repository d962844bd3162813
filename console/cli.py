"""Entry point of `hadeck`, the operations console.

hadeck --inventory FILE [--read-only] [--theme NAME] [--keymap FILE]
hadeck check-inventory FILE [--json]
hadeck demo [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from agent.config import ConfigError


def _problems(exc: ConfigError, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "problems": [vars(p) for p in exc.problems]}))
    else:
        for p in exc.problems:
            print(p, file=sys.stderr)
    return 2


def run_console(args: argparse.Namespace) -> int:
    from console import inventory, keymap
    from console.app import HadeckApp, default_keymap_path, known_binding_ids
    from console.connect import build

    try:
        inv = inventory.load(args.inventory)
        keymap_file = args.keymap or default_keymap_path()
        keys = (
            keymap.load(keymap_file, known_binding_ids())
            if args.keymap or keymap_file.exists()
            else {}
        )
    except ConfigError as exc:
        return _problems(exc, False)
    model, clients = build(inv)
    app = HadeckApp(
        model,
        clients,
        environment=inv.environment,
        haproxy=inv.haproxy,
        read_only=args.read_only,
        theme=args.theme,
        keymap=keys,
        poll_interval=inv.polling.interval,
        concurrency=inv.polling.concurrency,
        handle_hangup=True,
    )
    app.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="hadeck", description="hadeck operations console")
    p.add_argument(
        "--inventory", "-i", type=Path, help="inventory YAML (hosts and how to reach them)"
    )
    p.add_argument("--read-only", action="store_true", help="observe only: no action can be taken")
    p.add_argument("--theme", help="hadeck-dark (default), hadeck-light, hadeck-high-contrast, ...")
    p.add_argument("--keymap", type=Path, help="keymap YAML: binding id -> keys")
    sub = p.add_subparsers(dest="command")
    demo = sub.add_parser(
        "demo", help="start a local fleet of agents on loopback and open the console"
    )
    demo.add_argument("--dir", type=Path, default=None, help="where configs, state and logs go")
    demo.add_argument("--read-only", action="store_true", dest="demo_read_only")
    check = sub.add_parser("check-inventory", help="validate an inventory file (exit 2 if invalid)")
    check.add_argument("file", type=Path)
    check.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.command == "demo":
        from console.demo import fleet

        return fleet.main(
            args.dir or fleet.default_dir(),
            read_only=args.read_only or args.demo_read_only,
            theme=args.theme,
        )
    if args.command == "check-inventory":
        from console import inventory

        try:
            inv = inventory.load(args.file)
        except ConfigError as exc:
            return _problems(exc, args.json)
        msg = f"ok ({len(inv.hosts)} hosts)"
        print(json.dumps({"ok": True, "hosts": len(inv.hosts)}) if args.json else msg)
        return 0
    if args.inventory is None:
        p.error("give --inventory FILE, or try `hadeck demo`")
    return run_console(args)


if __name__ == "__main__":
    sys.exit(main())
