"""The coordinator's online limit endpoint: HTTPS, per-bank tokens, request log (docs/query.md).

This package knows HTTP, tokens and USCC syntax, nothing of the query protocol: the
serving run (``fedcredit.flower.serving``) hands the app a function that turns one
request's IDs into a signed answer, and maps a node's refusal or failure onto the
errors defined here.
"""
