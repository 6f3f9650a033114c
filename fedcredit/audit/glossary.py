"""What each protection class means, in words an auditor can check against the logs.

The report prints one line per class (``describe``); ``BASE_CLASSES`` lists every class
``fedcredit.audit.classes`` can compute, in its generic form (``paillier-<bits>`` stands
for every key size), so a test can insist that no class goes unexplained.
"""

from __future__ import annotations

import re

from fedcredit.audit.classes import BLINDED, MASKED, PLAINTEXT, PUBLIC, PUBLISHED, QUERIED_IDS, SEALED

_PAILLIER = re.compile(r"^(?P<mock>mock-)?paillier-(?P<bits>\d+|<bits>)(?P<masked>\+masked)?$")

_FIXED = {
    SEALED: "Sealed node-to-node envelope (X25519 key agreement, HKDF, AES-GCM) addressed to the receiver. "
            "The coordinator relays it without being able to read it; its size is all it learns.",
    BLINDED: "PSI points blinded with secret X25519 scalars (32 bytes each): whoever holds them cannot tell "
             "which enterprise IDs they stand for.",
    MASKED: "Values decrypted by the key holder, each hidden by a random mask only its owner knows; "
            "the key holder sees statistically masked integers, not the values.",
    PUBLIC: "No payload: only the header's public scalars (kind, step, counts, settings). No data leaves a node.",
    PUBLISHED: "Results the job publishes anyway (scores, reason codes, grades, limits, capacity caps, report "
               "context): sent in the clear to the parties entitled to them.",
    QUERIED_IDS: "The enterprise IDs of an online query, in the clear to every node of the serving run: a query "
                 "cannot be answered without telling each data holder whom the bank is looking at. Nothing else: "
                 "the payload holds only the IDs, which each node's log lists to check them against consent.",
    PLAINTEXT: "Anything that is none of the above. No message kind allows it: a plaintext record fails "
               "verification.",
}

BASE_CLASSES = (SEALED, "paillier-<bits>", "paillier-<bits>+masked", MASKED, BLINDED, PUBLIC, PUBLISHED,
                QUERIED_IDS, PLAINTEXT, "mock-paillier-<bits>")
"""Every class ``protection_class`` can return, key sizes written as ``<bits>``."""


def describe(cls: str) -> str:
    """One or two sentences saying how a payload of class ``cls`` is protected and who can read it."""
    if cls in _FIXED:
        return _FIXED[cls]
    m = _PAILLIER.match(cls)
    if m is None:
        return "Unknown class: not computed by this version of fedcredit (docs/audit.md lists the classes)."
    bits = m["bits"]
    text = (f"Paillier ciphertexts under the run's {bits}-bit public key (its fingerprint is in the record): "
            "only the private key's holder can decrypt them (scorecard LR: the coordinator, which receives "
            "sums masked or shuffled so it cannot link them to enterprises; docs/leakage.md).")
    if m["masked"]:
        text += " Alongside them: values the key holder decrypted, still hidden by random masks (see 'masked')."
    if m["mock"]:
        text = ("Test backend: the same structure as " + cls.removeprefix("mock-") + " but NOT encrypted. "
                "Refused unless the auditor explicitly allows mock runs.")
    return text


def generic(cls: str) -> str:
    """The glossary entry ``cls`` belongs to: ``paillier-2048+masked`` -> ``paillier-<bits>+masked``."""
    m = _PAILLIER.match(cls)
    if m is None:
        return cls
    return f"{m['mock'] or ''}paillier-<bits>{m['masked'] or ''}"
