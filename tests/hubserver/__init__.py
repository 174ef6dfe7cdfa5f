"""A loopback Hugging Face Hub for tests: real git repositories behind the Hub's HTTP protocol."""

from tests.hubserver.server import HubServer

__all__ = ["HubServer"]
