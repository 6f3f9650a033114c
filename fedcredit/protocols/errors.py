"""Protocol errors: a malformed, unexpected or inconsistent message is rejected, never trusted."""

from fedcredit.errors import FedCreditError


class ProtocolError(FedCreditError):
    """A message broke the protocol; the text names the message, its sender and the cause."""


class InputError(FedCreditError):
    """A party's own input cannot enter the protocol (e.g. invalid or duplicate IDs)."""
