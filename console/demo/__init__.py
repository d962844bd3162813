"""The local demo: a small HTTP service to supervise, and agents that supervise it."""
