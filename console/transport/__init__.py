"""How the console reaches an agent's loopback API: directly (local) or through SSH."""

from console.transport.base import HostKeyError, Response, Transport, TransportError

__all__ = ["HostKeyError", "Response", "Transport", "TransportError"]
