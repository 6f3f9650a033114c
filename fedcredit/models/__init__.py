"""Plaintext models that federated protocols are checked against (e.g. the SecureBoost reference)."""
