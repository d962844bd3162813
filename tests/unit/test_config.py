"""check-config: a valid file exits 0; each class of mistake gives one clear line and exit 2."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from agent.config import ConfigError, load, parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]
W = "probes:\n  w: {kind: tcp, host: h, port: 1}\n"


def check(tmp_path: Path, text: str) -> tuple[int, list[str]]:
    f = tmp_path / "agent.yaml"
    f.write_text(textwrap.dedent(text))
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", str(f)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    lines = proc.stdout.splitlines()
    if proc.returncode == 2:
        # The contract: every line names the file first.
        assert all(line.startswith(f"{f}: ") for line in lines), lines
    return proc.returncode, [line.removeprefix(f"{f}: ") for line in lines]


@pytest.mark.parametrize(
    "example", ["deploy/agent.example.yaml", "deploy/recipes/postgresql/agent.yaml"]
)
def test_example_config_is_valid(example):
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", example],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok" in proc.stdout


def test_minimal_config_is_valid(tmp_path):
    code, lines = check(
        tmp_path,
        """
        probes:
          web: {kind: tcp, host: 127.0.0.1, port: 80}
        """,
    )
    assert code == 0, lines


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("agent:\n  nmae: x\n", "agent.nmae: unknown key"),
        (
            "probes:\n  w: {kind: tcp, host: h, port: 1, intervall: 5s}\n",
            "probes.w.intervall: unknown key",
        ),
        ("probes:\n  w: {kind: tcp, port: 1}\n", "probes.w.host: required field is missing"),
        ("probes:\n  w: {kind: tcpp}\n", "probes.w: unknown kind 'tcpp'"),
        ("probes:\n  w: {host: h}\n", "probes.w: missing `kind`"),
        (
            "probes:\n  w: {kind: tcp, host: h, port: 99999}\n",
            "probes.w.port: Input should be less than or equal to 65535",
        ),
        (
            "probes:\n  w: {kind: tcp, host: h, port: 1, interval: soon}\n",
            "probes.w.interval: expected a duration",
        ),
        (
            "probes:\n  w: {kind: tcp, host: h, port: 1, interval: 1s, timeout: 5s}\n",
            "probes.w: timeout (5s) must be above 0 and at most the interval (1s)",
        ),
        (
            "probes:\n  w: {kind: tcp, host: h, port: 1, interval: 200ms, timeout: 100ms}\n",
            "probes.w: interval must be at least 250ms (the agent's tick)",
        ),
        (
            "probes:\n  w: {kind: http, url: 'ftp://x'}\n",
            "probes.w.url: expected an http:// or https:// URL",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h/a b'}\n",
            "probes.w.url: write the URL in ASCII without spaces",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h:0/'}\n",
            "probes.w.url: bad port in 'http://h:0/': 0",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h/', headers: {Content-Length: '5'}}\n",
            "probes.w.headers: header 'Content-Length' is set by the probe itself",
        ),
        (
            "resources:\n  interval: .inf\n",
            "resources.interval: a duration must be a finite number of seconds",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http:///healthz'}\n",
            "probes.w.url: no host in 'http:///healthz'",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h:99999/'}\n",
            "probes.w.url: bad port in 'http://h:99999/'",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h/', headers: {'X Y': z}}\n",
            "probes.w.headers: 'X Y' is not a valid header name",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h/', headers: {X-Y: ' z'}}\n",
            "probes.w.headers: header 'X-Y': a value must be ASCII, without line breaks",
        ),
        (
            # ESC and DEL are not field-value characters (RFC 9110), and ESC is a terminal's.
            "probes:\n  w: {kind: http, url: 'http://h/', headers: {X-Y: \"a\\eb\"}}\n",
            "probes.w.headers: header 'X-Y': a value must be ASCII, without line breaks",
        ),
        (
            "probes:\n  w: {kind: http, url: 'http://h/', headers: {X-Y: \"a\\x7Fb\"}}\n",
            "probes.w.headers: header 'X-Y': a value must be ASCII, without line breaks",
        ),
        (
            "probes:\n  w: {kind: command, command: []}\n",
            "probes.w.command: List should have at least 1 item",
        ),
        (
            "probes:\n  w: {kind: command, command: [x], stdout_regex: '(('}\n",
            "probes.w.stdout_regex: invalid regular expression",
        ),
        ("probes:\n  w: {kind: process}\n", "probes.w: give exactly one of `name` or `pidfile`"),
        ("probes:\n  w: {kind: disk, path: /}\n", "probes.w: give `min_free`"),
        (
            "probes:\n  w: {kind: disk, path: /, min_free: lots}\n",
            "probes.w.min_free: expected a size",
        ),
        (
            W + "services:\n  s: {probes: [w], restart: [x], recovery: {steps: [restart],"
            " backoff: {initial: 0s}}}\n",
            "services.s.recovery.backoff.initial: Input should be greater than 0",
        ),
        ("resources:\n  interval: 0s\n", "resources.interval: Input should be greater than 0"),
        ("resources:\n  mounts: [data]\n", "resources.mounts: 'data' is not a mount point"),
        ("api:\n  listen: 0.0.0.0:9440\n", "api.listen: the full API must listen on loopback only"),
        ("api:\n  token: {file: /x, env: Y}\n", "api.token: give exactly one of `file` or `env`"),
        (
            "services:\n  s: {probes: [nope]}\n",
            "services.s.probes.0: unknown probe 'nope' (defined: none)",
        ),
        (
            W + "services:\n  s: {probes: [w], depends_on: [db]}\n",
            "services.s.depends_on.0: unknown service 'db' (defined: s)",
        ),
        (
            W + "services:\n  s: {probes: [w], recovery: {steps: [restart]}}\n",
            "services.s.recovery.steps.0: step 'restart' needs the service's `restart`",
        ),
        (
            W + "services:\n  s: {probes: [w], recovery: {steps: [fixit]}}\n",
            "services.s.recovery.steps.0: unknown runbook 'fixit'",
        ),
        (
            W
            + "services:\n  a: {probes: [w], depends_on: [b]}\n"
            + "  b: {probes: [w], depends_on: [a]}\n",
            "dependency cycle: a -> b -> a",
        ),
        (
            "runbooks:\n  r: {steps: [{command: 'rm -rf /tmp/x'}]}\n",
            "runbooks.r.steps.0.command: Input should be a valid list",
        ),
        ("probes: [1, 2]\n", "probes: Input should be a valid dictionary"),
        ("- just\n- a list\n", "the top level must be a mapping of sections"),
        ("probes:\n  w: {kind: tcp\n", "invalid YAML: line"),
    ],
)
def test_each_mistake_gives_one_clear_line(tmp_path, text, expected):
    code, lines = check(tmp_path, text)
    assert code == 2
    assert any(expected in line for line in lines), lines


def test_every_problem_is_reported_at_once(tmp_path):
    code, lines = check(
        tmp_path,
        """
        agent: {nmae: x}
        api: {listen: "10.0.0.1:1"}
        probes:
          a: {kind: tcp, host: h}
        """,
    )
    assert code == 2
    assert len(lines) == 3, lines


def test_unreadable_file_is_named(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", str(tmp_path / "missing.yaml")],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert f"{tmp_path / 'missing.yaml'}: cannot read" in proc.stdout


def test_json_output_lists_problems(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("agent: {nmae: x}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "check-config", "--json", str(f)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert '"path": "agent.nmae"' in proc.stdout


def test_run_refuses_an_invalid_config_before_starting(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("probes: {w: {kind: nope}}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", "--config", str(f)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "probes.w: unknown kind 'nope'" in proc.stderr


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("5s", 5), ("2m", 120), ("1h", 3600), ("7d", 604800), (3, 3), ("1.5s", 1.5)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    ("text", "size"), [("10GiB", 10 * 2**30), ("500MB", 500 * 10**6), (1024, 1024), ("1KiB", 1024)]
)
def test_sizes(text, size):
    assert parse_size(text) == size


def test_secret_from_environment_is_not_inline(tmp_path, monkeypatch):
    from agent.config import read_secret

    f = tmp_path / "a.yaml"
    f.write_text("api: {token: {env: HADECK_TEST_TOKEN}}\n")
    cfg = load(f)
    assert cfg.api.token is not None
    monkeypatch.setenv("HADECK_TEST_TOKEN", "s3cret-s3cret-s3cret")
    assert read_secret(cfg.api.token) == "s3cret-s3cret-s3cret"
    monkeypatch.delenv("HADECK_TEST_TOKEN")
    with pytest.raises(KeyError, match="HADECK_TEST_TOKEN is not set"):
        read_secret(cfg.api.token)


def test_config_error_carries_structured_problems(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("agent: {nmae: x}\n")
    with pytest.raises(ConfigError) as err:
        load(f)
    (problem,) = err.value.problems
    assert (problem.file, problem.path, problem.message) == (str(f), "agent.nmae", "unknown key")


def test_a_key_given_twice_is_an_error_not_silently_the_last(tmp_path: Path) -> None:
    path = tmp_path / "agent.yaml"
    path.write_text(
        "probes:\n  web: {kind: tcp, host: a, port: 1}\n  web: {kind: tcp, host: b, port: 2}\n"
    )
    with pytest.raises(ConfigError) as err:
        load(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}: invalid YAML: line 3, column 3: duplicate key 'web'"
    ]


def test_relative_paths_are_beside_the_config_file_not_the_working_directory(tmp_path: Path):
    etc = tmp_path / "etc" / "hadeck"
    etc.mkdir(parents=True)
    f = etc / "agent.yaml"
    f.write_text(
        "agent: {state_dir: state}\n"
        "api: {token: {file: secrets/token}}\n"
        "probes:\n"
        "  beat: {kind: file_age, path: run/beat, max_age: 1m}\n"
        "  abs: {kind: file_age, path: /run/beat, max_age: 1m}\n"
    )
    cfg = load(f)
    assert cfg.agent.state_dir == etc / "state"
    assert cfg.api.token is not None and cfg.api.token.file == etc / "secrets" / "token"
    assert cfg.probes["beat"].path == etc / "run" / "beat"  # type: ignore[union-attr]
    assert cfg.probes["abs"].path == Path("/run/beat")  # type: ignore[union-attr]


def test_every_discriminated_union_gets_paths_and_messages_as_written() -> None:
    """Not only probes: a union anywhere (in a list, a mapping, an optional field) is
    reported with the path the operator wrote, without pydantic's tag in it."""
    from typing import Annotated, Literal

    from pydantic import Field

    from agent.config import PositiveDuration, Strict, validate_as

    class Fixed(Strict):
        kind: Literal["fixed"]
        every: PositiveDuration

    class Window(Strict):
        kind: Literal["window"]
        start: str

    class Job(Strict):
        when: Annotated[Fixed | Window, Field(discriminator="kind")]
        retry: Fixed | Window | None = Field(default=None, discriminator="kind")

    class Root(Strict):
        jobs: dict[str, list[Job]]

    with pytest.raises(ConfigError) as err:
        validate_as(
            Root,
            {
                "jobs": {
                    "fixed": [
                        {"when": {"kind": "fixed", "every": "0s"}},
                        {"when": {"kind": "cron"}},
                        {"when": {"start": "x"}},
                        {"when": {"kind": "window", "start": "x"}, "retry": {"kind": "fixed"}},
                    ]
                }
            },
            "f.yaml",
        )
    assert [str(p) for p in err.value.problems] == [
        "f.yaml: jobs.fixed.0.when.every: Input should be greater than 0",
        "f.yaml: jobs.fixed.1.when: unknown kind 'cron' (expected one of: fixed, window)",
        "f.yaml: jobs.fixed.2.when: missing `kind` (one of: fixed, window)",
        "f.yaml: jobs.fixed.3.retry.every: required field is missing",
    ]


def test_yaml_merge_keys_work_as_safe_load_allows(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(
        "probes:\n"
        "  a: &tcp {kind: tcp, host: db, port: 5432, interval: 2s, timeout: 1s}\n"
        "  b:\n"
        "    <<: *tcp\n"
        "    port: 6432\n"  # the mapping's own key wins over the merged one
    )
    cfg = load(f)
    b = cfg.probes["b"]
    assert (b.kind, b.host, b.port, b.interval) == ("tcp", "db", 6432, 2.0)  # type: ignore[union-attr]
    f.write_text(
        "probes:\n  a: &tcp {kind: tcp, host: db, port: 1}\n  b: {<<: *tcp, port: 2, port: 3}\n"
    )
    with pytest.raises(ConfigError, match="duplicate key 'port'"):
        load(f)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('agent: {state_dir: "/var/\\0lib"}\n', "agent.state_dir: contains a NUL character"),
        (
            'probes:\n  w: {kind: command, command: ["a\\0b"]}\n',
            "probes.w.command.0: contains a NUL character",
        ),
        (
            'probes:\n  "w\\ud800": {kind: tcp, host: h, port: 1}\n',
            "a key contains a lone surrogate",
        ),
        ('agent: {name: "web\\udc00"}\n', "agent.name: contains a lone surrogate"),
        ('agent: {"na\\x1bme": x}\n', "a key contains a control or other non-printable character"),
    ],
)
def test_strings_nothing_can_carry_are_refused(tmp_path: Path, text: str, expected: str) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(f)
    assert any(expected in str(p) for p in err.value.problems), err.value.problems


def problems_of(tmp_path: Path, text: str) -> list[str]:
    f = tmp_path / "agent.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load(f)
    return [str(p).removeprefix(f"{f}: ") for p in err.value.problems]


HOOKS = "{promote: {command: [p], timeout: 1s}, demote: {command: [d], timeout: 1s}}"
GROUP = W + "services:\n  db: {probes: [w]}\ngroups:\n  pg: {service: db, hooks: %s%s}\n"


def group(extra: str = "", hooks: str = HOOKS, before: str = "") -> str:
    return before + GROUP % (hooks, extra)


def test_a_valid_group_passes(tmp_path: Path) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(
        group(
            ", member: db-1, address: '10.0.0.1:9441'",
            before="lease_store: {kind: etcd, endpoints: ['https://etcd-1:2379', "
            "'http://[::1]:2379/']}\n",
        )
    )
    cfg = load(f)
    assert cfg.groups["pg"].member == "db-1"
    assert cfg.lease_store.endpoints == ["https://etcd-1:2379", "http://[::1]:2379/"]


# Each passed check-config before and then broke the agent (scheduling, SQLite, the etcd
# client, exec, a terminal) or made a promise the agent cannot keep.
BREAKING = [
    # Durations the scheduler cannot add to now (1e15 s is 31 million years).
    (
        "probes:\n  w: {kind: tcp, host: h, port: 1, interval: 1.0e+15, timeout: 1s}\n",
        "probes.w.interval: a duration must be at most 365d",
    ),
    (
        "probes:\n  w: {kind: tcp, host: h, port: 1, interval: 1" + "0" * 400 + "}\n",
        "probes.w.interval: a duration must be at most 365d",
    ),
    ("resources: {interval: 400d}\n", "resources.interval: a duration must be at most 365d"),
    ("retention: {events: 1000d}\n", "retention.events: a duration must be at most 365d"),
    (
        "probes:\n  w: {kind: file_age, path: /x, max_age: 9999999999999}\n",
        "probes.w.max_age: a duration must be at most 365d",
    ),
    (
        "runbooks:\n  r: {steps: [{command: [x], timeout: 366d}]}\n",
        "runbooks.r.steps.0.timeout: a duration must be at most 365d",
    ),
    (
        W + "services:\n  s: {probes: [w], recovery: {window: 1000000000d}}\n",
        "services.s.recovery.window: a duration must be at most 365d",
    ),
    (group(", failover_after: 400d"), "groups.pg.failover_after: a duration must be at most"),
    # Counts SQLite cannot bind, and growth that overflows a float.
    (
        "retention: {max_events: 1" + "0" * 30 + "}\n",
        "retention.max_events: Input should be less",
    ),
    ("retention: {max_probe_results: " + str(2**63) + "}\n", "retention.max_probe_results"),
    (group(", priority: " + str(2**63)), "groups.pg.priority: Input should be less"),
    (
        W + "services:\n  s: {probes: [w], recovery: {backoff: {multiplier: 1.0e+300}}}\n",
        "services.s.recovery.backoff.multiplier: Input should be less than or equal to 10",
    ),
    # Sizes.
    ("probes:\n  w: {kind: disk, path: /, min_free: -5}\n", "probes.w.min_free: a size cannot"),
    (
        "probes:\n  w: {kind: disk, path: /, min_free: '1" + "0" * 400 + "GiB'}\n",
        "probes.w.min_free: a size must be a finite number of bytes",
    ),
    # Status codes and exit codes that cannot happen.
    (
        "probes:\n  w: {kind: http, url: 'http://h/', expect_status: []}\n",
        "probes.w.expect_status: List should have at least 1 item",
    ),
    (
        "probes:\n  w: {kind: http, url: 'http://h/', expect_status: [200, 999]}\n",
        "probes.w.expect_status.1: Input should be less than or equal to 599",
    ),
    (
        "probes:\n  w: {kind: http, url: 'http://h/', expect_status: [42]}\n",
        "probes.w.expect_status.0: Input should be greater than or equal to 100",
    ),
    (
        "probes:\n  w: {kind: command, command: [x], expect_exit: 256}\n",
        "probes.w.expect_exit: Input should be less than or equal to 255",
    ),
    (
        "probes:\n  w: {kind: command, command: [x], expect_exit: -1}\n",
        "probes.w.expect_exit: Input should be greater than or equal to 0",
    ),
    # Empty names the agent would look up for ever.
    ("api: {token: {env: ''}}\n", "api.token.env: String should have at least 1 character"),
    ("api: {token: {env: 'A=B'}}\n", "api.token.env: 'A=B' is not an environment variable name"),
    ("probes:\n  w: {kind: process, name: ''}\n", "probes.w.name: String should have at least"),
    ("probes:\n  w: {kind: systemd, unit: ''}\n", "probes.w.unit: String should have at least"),
    # Names: a newline passed the name rule at the end (`$` matches before it).
    (W + 'services:\n  s: {probes: [w]}\n  "x\\n": {probes: [w]}\n', "services.x\\n: a key"),
    ('agent: {name: "web-1\\n"}\n', "agent.name: 'web-1\\n' is not printable text"),
    ('agent: {name: "\\e[31mweb"}\n', "agent.name: '\\x1b[31mweb' is not printable text"),
    ('agent: {name: ""}\n', "agent.name: String should have at least 1 character"),
    (group(", member: 'db 1'"), "groups.pg.member: names use letters, digits"),
    (group(', member: "db-1\\n"'), "groups.pg.member: names use letters, digits"),
    ("agent: {name: 'web 1'}\n" + group(), "groups.pg.member: the member id defaults to"),
    # Lease store and addresses.
    (
        group(before="lease_store: {kind: etcd, endpoints: []}\n"),
        "lease_store.endpoints: etcd needs at least one endpoint",
    ),
    (
        group(before="lease_store: {kind: etcd, endpoints: ['10.0.0.1:2379']}\n"),
        "lease_store.endpoints.0: expected an http:// or https:// URL",
    ),
    (
        group(before="lease_store: {kind: etcd, endpoints: ['ftp://h:2379']}\n"),
        "lease_store.endpoints.0: expected an http:// or https:// URL",
    ),
    (
        group(before="lease_store: {kind: etcd, endpoints: ['http://h:2379/v3']}\n"),
        "lease_store.endpoints.0: no path, query or user in an endpoint",
    ),
    (
        group(before="lease_store: {kind: etcd, endpoints: ['http://h:99999']}\n"),
        "lease_store.endpoints.0: bad port",
    ),
    (group(", address: 'not an address'"), "groups.pg.address: expected HOST:PORT"),
    (group(", address: '10.0.0.1'"), "groups.pg.address: expected HOST:PORT"),
    (group(", address: '10.0.0.1:0'"), "groups.pg.address: expected HOST:PORT"),
    (group(", address: 'db_1/x:9441'"), "groups.pg.address: 'db_1/x' is not a host name"),
    # The timing contract: demote (and then fence) must end inside the margin.
    (
        group(hooks="{promote: {command: [p]}, demote: {command: [d]}}"),
        "groups.pg.hooks.demote.timeout: 30s is longer than the margin of loop_wait (1s)",
    ),
    # The fence runs at the deadline, beside a late demote: each must fit the margin.
    (
        group(hooks=HOOKS.replace("}}", "}, fence: {command: [f], timeout: 2s}}")),
        "groups.pg.hooks.fence.timeout: 2s is longer than the margin of loop_wait (1s)",
    ),
    (
        group(", watchdog: {device: /dev/watchdog, timeout: 9}"),
        "groups.pg.watchdog.timeout: 9s is longer than ttl - 2 x loop_wait (8s)",
    ),
    (group(", watchdog: {timeout: 0}"), "groups.pg.watchdog.timeout: "),
    # Names and hosts the kernel, the resolver or exec would never match, shown raw.
    ("probes:\n  p: {kind: process, name: ' '}\n", "probes.p.name: ' ' is not printable"),
    ('probes:\n  p: {kind: process, name: "nginx\\n"}\n', "probes.p.name: 'nginx\\n'"),
    ('probes:\n  p: {kind: process, name: "ng\\e[2J"}\n', "probes.p.name: 'ng\\x1b[2J'"),
    ('probes:\n  t: {kind: tcp, host: "h\\e[2J", port: 1}\n', "probes.t.host: 'h\\x1b[2J'"),
    ("probes:\n  t: {kind: tcp, host: 'a b', port: 1}\n", "probes.t.host: 'a b' is not a host"),
    ("api: {token: {env: ' '}}\n", "api.token.env: ' ' is not an environment variable name"),
    ("probes:\n  c: {kind: command, command: ['']}\n", "probes.c.command: the program ''"),
    ("runbooks:\n  r: {steps: [{command: [' x']}]}\n", "runbooks.r.steps.0.command: the program"),
    ("api: {listen: '::1:9441'}\n", "api.listen: write an IPv6 address in brackets"),
    # Where failsafe heartbeats go: an unbracketed IPv6 address was no URL to the client.
    (group(", address: 'fd00::5:9441'"), "groups.pg.address: write an IPv6 address in brackets"),
]


@pytest.mark.parametrize(("text", "expected"), BREAKING, ids=[e for _, e in BREAKING])
def test_values_that_would_break_the_agent_are_refused(
    tmp_path: Path, text: str, expected: str
) -> None:
    lines = problems_of(tmp_path, text)
    assert any(expected in line for line in lines), lines


def test_a_probe_timeout_longer_than_its_interval_is_refused_with_the_reason(tmp_path):
    (line,) = problems_of(tmp_path, "probes:\n  w: {kind: tcp, host: h, port: 1, timeout: 20s}\n")
    assert line == (
        "probes.w: timeout (20s) must be above 0 and at most the interval (10s), "
        "so a probe can never pile up behind itself"
    )


def test_control_characters_never_reach_the_terminal_raw(tmp_path: Path) -> None:
    for argv, name, text in [
        (["agent.cli", "check-config"], "agent.yaml", 'agent: {"na\\e]0;pwned\\ame": x}\n'),
        (["agent.cli", "check-config"], "agent.yaml", 'agent: {name: "\\e[2J"}\n'),
        (["agent.cli", "check-config"], "agent.yaml", 'probes: {"w\\ud800": {kind: tcp}}\n'),
        (["console.cli", "check-inventory"], "inv.yaml", 'hosts: {"\\e[2J": {}}\n'),
        (["console.cli", "check-inventory"], "inv.yaml", 'environment: "\\e[5mprod"\nhosts: {}\n'),
    ]:
        f = tmp_path / name
        f.write_text(text)
        proc = subprocess.run(
            [sys.executable, "-m", *argv, str(f)], capture_output=True, timeout=30, cwd=ROOT
        )
        out = proc.stdout + proc.stderr
        assert proc.returncode == 2 and b"Traceback" not in out, out
        assert b"\x1b" not in out and b"\x07" not in out, out
        assert b"\\x1b" in out or b"\\ud800" in out, out


FAILSAFE = ", address: '10.0.0.1:9441', failsafe: {secret: {file: /etc/hadeck/pg.secret}%s}"
PUBLIC = "api: {public_listen: '0.0.0.0:9441'}\n"


def test_failsafe_mode_needs_an_address_a_public_listener_and_a_round_inside_a_loop(
    tmp_path: Path,
) -> None:
    f = tmp_path / "agent.yaml"
    f.write_text(group(FAILSAFE % "", before=PUBLIC))
    pg = load(f).groups["pg"]
    assert pg.failsafe is not None and pg.failsafe_timeout == 0.5  # half of loop_wait
    assert problems_of(tmp_path, group(FAILSAFE % "")) == [
        "groups.pg.failsafe: failsafe mode needs api.public_listen: the other members' "
        "heartbeats arrive on the public listener"
    ]
    (line,) = problems_of(tmp_path, group(", failsafe: {secret: {env: S}}", before=PUBLIC))
    assert line.startswith("groups.pg.failsafe: failsafe mode needs this member's `address`")
    (line,) = problems_of(tmp_path, group(FAILSAFE % ", timeout: 1s", before=PUBLIC))
    assert line.startswith("groups.pg.failsafe.timeout: 1s is not shorter than loop_wait (1s)")
    lines = problems_of(tmp_path, group(", address: 'h:1', failsafe: {secret: s3cr3t}"))
    assert any(line.startswith("groups.pg.failsafe.secret: ") for line in lines), lines
