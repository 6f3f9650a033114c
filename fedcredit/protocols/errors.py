"""Errors of a party's own input (messages from others raise ``fedcredit.common.errors.ProtocolError``)."""

from fedcredit.common.errors import FedCreditError


class InputError(FedCreditError):
    """A party's own input cannot enter the protocol (e.g. invalid or duplicate IDs)."""
