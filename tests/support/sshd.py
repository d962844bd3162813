"""A real OpenSSH `sshd` on loopback, for tests of the console's SSH transport.

It runs as the current user on 127.0.0.1 and a free port, with a host key and a
user key generated for it in a temporary directory, and a known_hosts file that
trusts exactly that host key. Nothing outside the directory is touched, except
that sshd running as root insists on its privilege separation directory
(/run/sshd), which is created as systemd would if it is missing.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from console.demo.component import Component, free_port, port_open, wait_for
from tests.support import components

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
PACKAGES = "openssh-server openssh-client"
PRIVSEP_DIR = Path("/run/sshd")


def require_openssh() -> None:
    """Skip (or, under CI=true, fail) when OpenSSH's server or ssh-keygen is missing."""
    absent = [
        what
        for what, present in (
            (str(SSHD), SSHD.exists()),
            (SSH_KEYGEN, shutil.which(SSH_KEYGEN) is not None),
        )
        if not present
    ]
    if absent:
        components.missing(" and ".join(absent), PACKAGES)


def keygen(path: Path, comment: str) -> Path:
    """A new ed25519 key pair without passphrase at `path` (+ `.pub`); returns `path`."""
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )
    return path


def fingerprint(public_key: Path) -> str:
    """The key's SHA256 fingerprint as OpenSSH itself prints it (`SHA256:...`)."""
    out = subprocess.run(
        [SSH_KEYGEN, "-l", "-E", "sha256", "-f", str(public_key)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return out.split()[1]


@dataclass
class SshServer:
    """One `sshd -D` child process; `start()` again after `kill()` brings it back, same keys.

    The listener is a Component; the sessions it forks are not in its process group (sshd
    gives each its own session), so kill, freeze and stop reach them through the process
    tree."""

    dir: Path
    port: int = field(default_factory=free_port)
    user: str = field(default_factory=getpass.getuser)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.host_key = keygen(self.dir / "ssh_host_ed25519_key", "hadeck-test-host")
        self.user_key = keygen(self.dir / "id_ed25519", "hadeck-test-user")
        self.authorized_keys = self.dir / "authorized_keys"
        self.authorized_keys.write_text(self.user_key.with_suffix(".pub").read_text())
        self.known_hosts = self.dir / "known_hosts"
        self.write_known_hosts(self.known_hosts, self.host_key.with_suffix(".pub"))
        self.config_path = self.dir / "sshd_config"
        self.config_path.write_text(self._config())
        self.component = Component(
            "sshd",
            [str(SSHD), "-D", "-e", "-f", str(self.config_path)],
            self.log_path,
            port_open(self.port, banner=b"SSH-2.0-"),
            start_timeout=15,
        )

    @property
    def known_hosts_name(self) -> str:
        return f"[127.0.0.1]:{self.port}"

    @property
    def host_fingerprint(self) -> str:
        return fingerprint(self.host_key.with_suffix(".pub"))

    @property
    def log_path(self) -> Path:
        return self.dir / "sshd.log"

    def write_known_hosts(self, path: Path, public_key: Path) -> Path:
        """A known_hosts file that lists `public_key` for this server."""
        kind, blob = public_key.read_text().split()[:2]
        path.write_text(f"{self.known_hosts_name} {kind} {blob}\n")
        return path

    def _config(self) -> str:
        return "\n".join(
            [
                f"Port {self.port}",
                "ListenAddress 127.0.0.1",
                f"HostKey {self.host_key}",
                f"PidFile {self.dir / 'sshd.pid'}",
                f"AuthorizedKeysFile {self.authorized_keys}",
                f"AllowUsers {self.user}",
                "StrictModes no",
                "UsePAM no",
                "PubkeyAuthentication yes",
                "PasswordAuthentication no",
                "KbdInteractiveAuthentication no",
                # Root is the usual user in CI containers; keys only, as the default allows.
                "PermitRootLogin prohibit-password",
                "AllowTcpForwarding yes",
                "UseDNS no",
                "PrintMotd no",
                "LogLevel VERBOSE",
                "",
            ]
        )

    def start(self) -> SshServer:
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755)
        self.component.start()
        return self

    def log(self) -> str:
        return self.component.log()

    def logins(self) -> int:
        """How many SSH logins the server has accepted so far."""
        return self.log().count("Accepted publickey")

    def _processes(self) -> list[psutil.Process]:
        """The listener and the per-connection sshd processes it forked."""
        if not self.component.running:
            return []
        try:
            main = psutil.Process(self.component.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> None:
        """The host goes away: SIGKILL to the listener and every session, as a crash would."""
        procs = self._processes()
        _signal(procs[1:], signal.SIGKILL)
        self.component.kill()
        _wait_dead(procs)

    def freeze(self) -> list[psutil.Process]:
        """The host hangs: SIGSTOP to the listener and every session; returns them for thaw()."""
        procs = self._processes()
        _signal(procs, signal.SIGSTOP)
        return procs

    @staticmethod
    def thaw(procs: list[psutil.Process]) -> None:
        _signal(procs, signal.SIGCONT)

    def stop(self) -> None:
        """End the sessions sshd would leave running, then SIGTERM the listener."""
        procs = self._processes()
        if not procs:
            return
        self.thaw(procs)
        # Sessions first, while the listener is there to reap them.
        sessions = procs[1:]
        _signal(sessions, signal.SIGKILL)
        _wait_dead(sessions)
        self.component.stop()


def _signal(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def _wait_dead(procs: list[psutil.Process]) -> None:
    """Wait until every process has exited. A zombie counts: orphaned session processes
    are reaped by PID 1, which in a container may take its time or never happen."""

    def dead(p: psutil.Process) -> bool:
        try:
            return p.status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    wait_for(lambda: all(dead(p) for p in procs), 10, f"sshd processes {procs} to exit")
