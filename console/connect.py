"""From an inventory to the console's pieces: a model with every host, a client per host."""

from __future__ import annotations

from console.agent_client import AgentClient
from console.fleet import FleetModel
from console.inventory import Inventory
from console.transport import Transport
from console.transport.local import LocalTransport


def transport_for(name: str, inv: Inventory) -> Transport:
    host = inv.hosts[name]
    if host.local is not None:
        return LocalTransport(host.local.url, host.local.token_file)
    assert host.ssh is not None
    # paramiko is imported only when an inventory has SSH hosts: the demo does not pay for it.
    from console.transport.ssh import SshTransport

    return SshTransport(name, host.ssh, host.agent_port, connect_timeout=inv.polling.timeout)


def build(inv: Inventory) -> tuple[FleetModel, dict[str, AgentClient]]:
    model = FleetModel(stale_after=inv.polling.stale_after)
    clients = {}
    for name, host in inv.hosts.items():
        transport = transport_for(name, inv)
        clients[name] = AgentClient(transport, timeout=inv.polling.timeout)
        model.add_host(name, host.labels, transport.describe)
    return model, clients
