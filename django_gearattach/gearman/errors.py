"""Exceptions raised by the Gearman protocol layer."""

from __future__ import annotations


class GearmanError(Exception):
    """Base class for every error of the protocol layer."""


class ProtocolError(GearmanError):
    """A packet that does not follow the Gearman protocol."""


class ServerError(GearmanError):
    """gearmand answered ERROR (code, text)."""

    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"gearmand error {code}: {text}")
        self.code = code
        self.text = text


class ConnectionFailed(GearmanError):
    """A gearmand server could not be reached or went away."""

    def __init__(self, address: str, reason: str) -> None:
        super().__init__(f"gearmand at {address}: {reason}")
        self.address = address
        self.reason = reason


class NoServerAvailable(GearmanError):
    """Every configured gearmand failed."""
