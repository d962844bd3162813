"""The one error type of the agent's API: a status and a sentence the caller can act on.

The API raises it (bad token, unknown group), and so do the actions and group operations
it calls (`agent.actions.Refused` is a subclass): each becomes a JSON `Problem` with its
status. It imports nothing of the web stack, so those modules need none either.
"""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message
