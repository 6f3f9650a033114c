"""Error types shared by every layer; the CLI prints their message without a traceback."""


class FedCreditError(Exception):
    """An error whose message is meant for the user as it stands."""
