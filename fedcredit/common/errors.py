"""Error types shared by every layer; the CLI prints their message without a traceback."""


class FedCreditError(Exception):
    """An error whose message is meant for the user as it stands."""


class ProtocolError(FedCreditError):
    """A message broke the protocol: malformed, unexpected or inconsistent; the text names the
    message, its sender and the cause. Raised by the wire codec and by every party."""
