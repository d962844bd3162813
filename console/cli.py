"""Entry point of the `hadeck` console.

The console itself is a later capability; until it lands, the command says so
plainly instead of pretending, and points at the agent, which already works.
"""

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "hadeck: the console is not built yet. The agent is: "
        "`hadeck-agent run --config deploy/agent.example.yaml`",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
