"""The agent's configuration: YAML on disk, validated by the pydantic models here.

Every problem is reported as one line naming the file, the dotted path of the
field and what is wrong, so `hadeck-agent check-config` and a failed SIGHUP
reload say exactly where to look. Unknown keys are errors: a typo such as
`intervall:` must never be silently ignored on a production host.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from agent.ticks import TICK

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
# The probe frames its own request: one of these from the config would break it.
_FRAMING_HEADERS = {"content-length", "transfer-encoding", "connection"}
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$")
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KiB": 2**10,
    "MiB": 2**20,
    "GiB": 2**30,
    "TiB": 2**40,
}


def parse_duration(value: Any) -> float:
    """Seconds from `500ms`, `5s`, `2m`, `1h`, `7d` or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 5s, 500ms or 2m")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"expected a duration such as 5s, 500ms or 2m, got {value!r}")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    if not math.isfinite(seconds):
        raise ValueError("a duration must be a finite number of seconds")
    return seconds


def parse_size(value: Any) -> int:
    """Bytes from `10GiB`, `500MB` or a plain number of bytes."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as 10GiB or 500MB")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(float(m.group(1)) * _SIZE_UNITS[m.group(2)])
    raise ValueError(f"expected a size such as 10GiB or 500MB, got {value!r}")


Duration = Annotated[float, BeforeValidator(parse_duration)]


def _beside_config(value: Path, info: ValidationInfo) -> Path:
    """A relative path is read as relative to the config file's directory (as Prometheus
    does): the agent's working directory is `/` under systemd, a trap for `state_dir: state`."""
    base = (info.context or {}).get("base")
    return value if value.is_absolute() or base is None else base / value


ConfigPath = Annotated[Path, AfterValidator(_beside_config)]
# Windows, timeouts and periods: zero would mean a busy loop or an instant give-up.
PositiveDuration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]
Size = Annotated[int, BeforeValidator(parse_size)]
Argv = Annotated[list[str], Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Secret(Strict):
    """A secret comes from a file or an environment variable, never inline."""

    file: ConfigPath | None = None
    env: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Secret:
        if (self.file is None) == (self.env is None):
            raise ValueError("give exactly one of `file` or `env`")
        return self


class AgentSection(Strict):
    name: str = Field(default_factory=socket.gethostname)
    state_dir: ConfigPath = Path("/var/lib/hadeck")
    log_level: Literal["debug", "info", "warning", "error"] = "info"


def _listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


class ApiSection(Strict):
    listen: str = "127.0.0.1:9440"
    public_listen: str | None = None
    token: Secret | None = None

    @field_validator("listen")
    @classmethod
    def _loopback_only(cls, value: str) -> str:
        host, _ = _listen(value)
        if host == "localhost":
            return value
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            raise ValueError(f"expected an IP address, got {host!r}") from None
        if not loopback:
            raise ValueError(
                f"the full API must listen on loopback only, got {host!r}; "
                "use public_listen for the read-only endpoints"
            )
        return value

    @field_validator("public_listen")
    @classmethod
    def _valid_address(cls, value: str | None) -> str | None:
        if value is not None:
            _listen(value)
        return value


class FlapSection(Strict):
    """Too many state changes within `window` mark a probe as flapping."""

    window: PositiveDuration = 300.0
    changes: int = Field(default=6, ge=2)


class ProbeBase(Strict):
    interval: Duration = 10.0
    timeout: Duration = 5.0
    jitter: Duration = 0.0
    fall: int = Field(default=3, ge=1, le=100)
    rise: int = Field(default=2, ge=1, le=100)
    flap: FlapSection = FlapSection()

    @model_validator(mode="after")
    def _timing(self) -> ProbeBase:
        if self.interval < TICK:
            # Runs are aligned to the tick: a shorter interval would lose runs to it.
            raise ValueError(f"interval must be at least {TICK * 1000:g}ms (the agent's tick)")
        if self.timeout <= 0 or self.timeout > self.interval:
            raise ValueError(
                f"timeout ({self.timeout:g}s) must be above 0 and at most the interval "
                f"({self.interval:g}s), so a probe can never pile up behind itself"
            )
        if self.jitter >= self.interval:
            raise ValueError("jitter must be smaller than the interval")
        return self


class HttpProbe(ProbeBase):
    kind: Literal["http"]
    url: str
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expect_status: list[int] = Field(default_factory=lambda: [200])
    body_regex: str | None = None
    tls_verify: bool = True
    headers: dict[str, str] = Field(default_factory=dict)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        if not value.isascii() or any(c.isspace() or ord(c) < 32 for c in value):
            raise ValueError(
                "write the URL in ASCII without spaces: percent-encode the path "
                "(%20) and give an international host name in its xn-- form"
            )
        url = urlsplit(value)
        if not url.hostname:
            raise ValueError(f"no host in {value!r}")
        try:
            port = url.port
        except ValueError as exc:
            raise ValueError(f"bad port in {value!r}: {exc}") from None
        if port == 0:
            raise ValueError(f"bad port in {value!r}: 0")
        return value

    @field_validator("headers")
    @classmethod
    def _header_syntax(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _HEADER_NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a valid header name")
            if name.lower() in _FRAMING_HEADERS:
                raise ValueError(f"header {name!r} is set by the probe itself")
            if not text.isascii() or text != text.strip() or any(c in text for c in "\r\n\0"):
                raise ValueError(
                    f"header {name!r}: a value must be ASCII, without line breaks or NUL, "
                    "and not start or end with white space"
                )
        return value

    @field_validator("body_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _check_regex(value)


class TcpProbe(ProbeBase):
    kind: Literal["tcp"]
    host: str
    port: int = Field(ge=1, le=65535)


class CommandProbe(ProbeBase):
    kind: Literal["command"]
    command: Argv
    expect_exit: int = 0
    stdout_regex: str | None = None

    @field_validator("stdout_regex")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        return _check_regex(value)


class ProcessProbe(ProbeBase):
    kind: Literal["process"]
    name: str | None = None
    pidfile: ConfigPath | None = None

    @model_validator(mode="after")
    def _one_way(self) -> ProcessProbe:
        if (self.name is None) == (self.pidfile is None):
            raise ValueError("give exactly one of `name` or `pidfile`")
        return self


class DiskProbe(ProbeBase):
    kind: Literal["disk"]
    path: ConfigPath
    min_free: Size | None = None
    min_free_percent: float | None = Field(default=None, gt=0, lt=100)

    @model_validator(mode="after")
    def _threshold(self) -> DiskProbe:
        if self.min_free is None and self.min_free_percent is None:
            raise ValueError("give `min_free` (e.g. 5GiB) and/or `min_free_percent`")
        return self


class FileAgeProbe(ProbeBase):
    kind: Literal["file_age"]
    path: ConfigPath
    max_age: PositiveDuration


class SystemdProbe(ProbeBase):
    kind: Literal["systemd"]
    unit: str


ProbeConfig = Annotated[
    HttpProbe | TcpProbe | CommandProbe | ProcessProbe | DiskProbe | FileAgeProbe | SystemdProbe,
    Field(discriminator="kind"),
]


class CommandStep(Strict):
    command: Argv
    timeout: PositiveDuration = 30.0


class Runbook(Strict):
    description: str = ""
    steps: list[CommandStep] = Field(min_length=1)


class Backoff(Strict):
    initial: PositiveDuration = 5.0
    max: PositiveDuration = 300.0
    multiplier: float = Field(default=2.0, ge=1.0)


class RecoveryPolicy(Strict):
    """An ordered ladder of steps; after each, the probes must come back within `verify_window`.

    A step is `restart` (the service's restart command) or the name of a runbook.
    Beyond the last step, the last one is repeated until the attempt budget
    (`max_attempts` within `window`) is spent; then the service is `gave_up`
    until it comes back by itself or the window frees an attempt.
    """

    steps: list[str] = Field(default_factory=lambda: ["restart"], min_length=1)
    verify_window: PositiveDuration = 30.0
    backoff: Backoff = Backoff()
    max_attempts: int = Field(default=5, ge=1)
    window: PositiveDuration = 3600.0


class Service(Strict):
    probes: list[str] = Field(min_length=1)
    depends_on: list[str] = Field(default_factory=list)
    restart: CommandStep | None = None
    recovery: RecoveryPolicy | None = None


class GroupHooks(Strict):
    """Commands run on role changes; each gets HADECK_GROUP, HADECK_MEMBER, HADECK_ROLE and
    (promote) HADECK_FENCING_TOKEN in its environment."""

    promote: CommandStep
    demote: CommandStep
    #: Last resort when `demote` fails or times out: make sure this member serves no writes.
    fence: CommandStep | None = None


class Group(Strict):
    """This host's membership in an HA group: one primary among its members, never two.

    Timing contract (see docs/failover.md): the primary renews its lease every
    `loop_wait` and stops being primary `safety` seconds before the lease could
    expire anywhere, so `ttl` must leave room for a renewal that times out.
    """

    member: str | None = None  # default: agent.name
    priority: int = Field(default=100, ge=0)
    service: str
    hooks: GroupHooks
    lag: CommandStep | None = None
    max_lag: float | None = Field(default=None, ge=0)
    ttl: PositiveDuration = 10.0
    loop_wait: PositiveDuration = 1.0
    #: How long the primary's service may stay down before it hands over. Default: 0 without
    #: a recovery policy, else one pass of the service's ladder (steps x verify_window).
    failover_after: Duration | None = None
    #: Where other hosts reach this member's public listener (shown in plans and the console).
    address: str | None = None

    @model_validator(mode="after")
    def _timing(self) -> Group:
        if self.loop_wait <= 0:
            raise ValueError("loop_wait must be positive")
        return self


class LeaseStoreSection(Strict):
    kind: Literal["sqlite", "etcd"] = "sqlite"
    #: sqlite: the database file every member on this machine shares.
    path: ConfigPath | None = None
    #: etcd: client URLs of the cluster (its v3 JSON gateway).
    endpoints: list[str] = Field(default_factory=lambda: ["http://127.0.0.1:2379"])
    prefix: str = "/hadeck"
    timeout: PositiveDuration = 2.0


class ResourcesSection(Strict):
    interval: PositiveDuration = 15.0
    mounts: list[Path] | None = None

    @field_validator("mounts")
    @classmethod
    def _mount_points(cls, value: list[Path] | None) -> list[Path] | None:
        for mount in value or []:
            if not mount.is_absolute():
                raise ValueError(f"{str(mount)!r} is not a mount point (an absolute path)")
        return value


class RetentionSection(Strict):
    events: PositiveDuration = 30 * 86400.0
    probe_results: PositiveDuration = 86400.0
    max_events: int = Field(default=100_000, ge=100)
    max_probe_results: int = Field(default=200_000, ge=1000)


class AuditSection(Strict):
    path: ConfigPath | None = None


class AgentConfig(Strict):
    agent: AgentSection = AgentSection()
    api: ApiSection = ApiSection()
    resources: ResourcesSection = ResourcesSection()
    retention: RetentionSection = RetentionSection()
    audit: AuditSection = AuditSection()
    probes: dict[str, ProbeConfig] = Field(default_factory=dict)
    services: dict[str, Service] = Field(default_factory=dict)
    runbooks: dict[str, Runbook] = Field(default_factory=dict)
    lease_store: LeaseStoreSection = LeaseStoreSection()
    groups: dict[str, Group] = Field(default_factory=dict)

    @property
    def audit_path(self) -> Path:
        return self.audit.path or self.agent.state_dir / "audit.jsonl"

    @property
    def token_source(self) -> Secret:
        return self.api.token or Secret(file=self.agent.state_dir / "token")

    @model_validator(mode="after")
    def _references(self) -> AgentConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        for section in ("probes", "services", "runbooks", "groups"):
            for name in getattr(self, section):
                if not _NAME.match(name):
                    problems.append(
                        ((section, name), "names use letters, digits, '.', '_' and '-' only")
                    )
        if "restart" in self.runbooks:
            problems.append((("runbooks", "restart"), "'restart' is reserved for the restart step"))
        for sname, svc in self.services.items():
            for i, probe in enumerate(svc.probes):
                if probe not in self.probes:
                    problems.append(
                        (("services", sname, "probes", i), _unknown("probe", probe, self.probes))
                    )
            for i, dep in enumerate(svc.depends_on):
                if dep not in self.services or dep == sname:
                    problems.append(
                        (
                            ("services", sname, "depends_on", i),
                            _unknown("service", dep, self.services),
                        )
                    )
            if svc.recovery is not None:
                for i, step in enumerate(svc.recovery.steps):
                    where = ("services", sname, "recovery", "steps", i)
                    if step == "restart":
                        if svc.restart is None:
                            problems.append((where, "step 'restart' needs the service's `restart`"))
                    elif step not in self.runbooks:
                        problems.append((where, _unknown("runbook", step, self.runbooks)))
        for gname, group in self.groups.items():
            if group.service not in self.services:
                problems.append(
                    (
                        ("groups", gname, "service"),
                        _unknown("service", group.service, self.services),
                    )
                )
            floor = 3 * group.loop_wait + self.lease_store.timeout
            if group.ttl < floor:
                problems.append(
                    (
                        ("groups", gname, "ttl"),
                        f"ttl ({group.ttl:g}s) must be at least 3 x loop_wait + lease_store.timeout"
                        f" ({floor:g}s): one loop to renew, one for a renewal that times out, "
                        "one to demote before the lease can expire elsewhere",
                    )
                )
        cycle = _find_cycle({n: s.depends_on for n, s in self.services.items()})
        if cycle:
            problems.append(
                (("services", cycle[0], "depends_on"), "dependency cycle: " + " -> ".join(cycle))
            )
        if problems:
            raise _ReferenceErrors(problems)
        return self


class _ReferenceErrors(ValueError):
    """Cross-field problems, each with its own path (pydantic would give them all one)."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(msg for _, msg in problems))
        self.problems = problems


def _check_regex(value: str | None) -> str | None:
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"invalid regular expression: {exc}") from None
    return value


def _unknown(what: str, name: str, known: dict[str, Any]) -> str:
    choices = ", ".join(sorted(known)) or "none"
    return f"unknown {what} {name!r} (defined: {choices})"


def _find_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    visiting: list[str] = []
    done: set[str] = set()

    def visit(node: str) -> list[str] | None:
        if node in visiting:
            return [*visiting[visiting.index(node) :], node]
        if node in done or node not in graph:
            return None
        visiting.append(node)
        for nxt in graph[node]:
            if found := visit(nxt):
                return found
        visiting.pop()
        done.add(node)
        return None

    for start in graph:
        if found := visit(start):
            return found
    return None


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a config file, printable as one line."""

    file: str
    path: str
    message: str

    def __str__(self) -> str:
        return (
            f"{self.file}: {self.path}: {self.message}"
            if self.path
            else f"{self.file}: {self.message}"
        )


class ConfigError(Exception):
    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


_PROBE_KINDS = {"http", "tcp", "command", "process", "disk", "file_age", "systemd"}


def _dotted(loc: tuple[str | int, ...]) -> str:
    parts = list(loc)
    # A discriminated union puts the chosen kind into the path (probes.web.http.url);
    # operators wrote probes.web.url, so that is what we print.
    if len(parts) > 2 and parts[0] == "probes" and parts[2] in _PROBE_KINDS:
        del parts[2]
    return ".".join(str(p) for p in parts if not str(p).startswith("function-"))


def _message(error: ErrorDetails) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required field is missing"
    if kind == "union_tag_invalid":
        kind_given = error["input"].get("kind") if isinstance(error["input"], dict) else None
        return f"unknown kind {kind_given!r} (expected one of: {', '.join(sorted(_PROBE_KINDS))})"
    if kind == "union_tag_not_found":
        return "missing `kind` (one of: " + ", ".join(sorted(_PROBE_KINDS)) + ")"
    msg = str(error["msg"])
    return msg.removeprefix("Value error, ")


def validate(data: Any, file: str) -> AgentConfig:
    """Validate already-parsed YAML; raises ConfigError listing every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(file, "", "the top level must be a mapping of sections")])
    try:
        return AgentConfig.model_validate(data, context={"base": Path(file).parent.absolute()})
    except ValidationError as exc:
        problems: list[Problem] = []
        for error in exc.errors():
            ctx_error = (error.get("ctx") or {}).get("error")
            if isinstance(ctx_error, _ReferenceErrors):
                problems.extend(Problem(file, _dotted(loc), msg) for loc, msg in ctx_error.problems)
            else:
                problems.append(Problem(file, _dotted(tuple(error["loc"])), _message(error)))
        raise ConfigError(problems) from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load, except that a key given twice is an error: with plain YAML the last one
    wins silently, and two probes with the same name would quietly become one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(text: str) -> Any:
    """YAML as config files need it: safe types only, duplicate keys refused."""
    return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader subclass)


def load(path: str | os.PathLike[str]) -> AgentConfig:
    """Read, parse and validate a config file; every failure is a ConfigError."""
    return validate(read_yaml(path), str(path))


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """A YAML file's content; an unreadable file or invalid YAML is a ConfigError naming it."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(file, "", f"cannot read: {exc.strerror}")]) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, "", "not UTF-8 text")]) from None
    try:
        data = parse_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([Problem(file, "", f"invalid YAML: {where}{problem}")]) from None
    return data


def read_secret(secret: Secret) -> str:
    """The secret's value; raises OSError or KeyError with a message that names the source."""
    if secret.env is not None:
        value = os.environ.get(secret.env)
        if not value:
            raise KeyError(f"environment variable {secret.env} is not set")
        return value.strip()
    assert secret.file is not None
    return secret.file.read_text(encoding="utf-8").strip()
