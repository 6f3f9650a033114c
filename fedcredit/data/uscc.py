"""Unified Social Credit Codes (USCC, GB 32100-2015): check characters, validation, generation.

A USCC has 18 characters over a 31-symbol alphabet (digits and upper-case letters
without I, O, Z, S, V). Position 18 is a check character: with weights 3^i mod 31,
``check = (31 - sum(w_i * v_i) mod 31) mod 31``. Validation and generation are
vectorized over numpy so that a million codes take well under a second.
"""

from __future__ import annotations

import numpy as np

ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
LENGTH = 18
WEIGHTS = np.array([pow(3, i, 31) for i in range(LENGTH - 1)], dtype=np.int64)

_ALPHABET_BYTES = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
# byte value -> alphabet index, or -1 for a character outside the alphabet
_INDEX_OF = np.full(256, -1, dtype=np.int64)
_INDEX_OF[_ALPHABET_BYTES] = np.arange(len(ALPHABET))

# Organisation code (GB 11714) body characters: digits and letters except I, O, Z, S, V.
_ORG_BODY = np.frombuffer(b"0123456789ABCDEFGHJKLMNPQRTUWXY", dtype=np.uint8)
_ORG_VALUE = np.array([int(c, 36) for c in "0123456789ABCDEFGHJKLMNPQRTUWXY"], dtype=np.int64)
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)

# Registration authority + category: "91" enterprise, "92" individual business,
# "93" farmers' cooperative (all registered with market regulation, authority 9).
_PREFIXES = np.array([b"91", b"92", b"93"])
_PREFIX_P = np.array([0.86, 0.12, 0.02])
# Administrative division codes of the pilot regions named in the design.
DIVISIONS = np.array(
    [b"110108", b"310115", b"440300", b"371000", b"630100", b"210200", b"340500", b"330100", b"510100", b"420100"]
)


def check_character(body: str) -> str:
    """The check character for the first 17 characters of a USCC."""
    if len(body) != LENGTH - 1 or any(c not in ALPHABET for c in body):
        raise ValueError(f"USCC body must be 17 characters from {ALPHABET!r}, got {body!r}")
    total = sum(ALPHABET.index(c) * int(w) for c, w in zip(body, WEIGHTS))
    return ALPHABET[(31 - total % 31) % 31]


def is_valid(code: str) -> bool:
    """True when ``code`` is a well-formed USCC with a correct check character."""
    return bool(invalid_mask(np.array([code], dtype=object))[0] == 0)


# Reasons returned by invalid_mask, in the order they are checked.
OK, BAD_LENGTH, BAD_CHARACTER, BAD_CHECK = 0, 1, 2, 3
REASONS = {
    BAD_LENGTH: "is not 18 characters long",
    BAD_CHARACTER: f"contains a character outside the USCC alphabet {ALPHABET}",
    BAD_CHECK: "has a wrong check character (GB 32100-2015)",
}


def invalid_mask(codes: np.ndarray) -> np.ndarray:
    """Per code: 0 when valid, else one of BAD_LENGTH, BAD_CHARACTER, BAD_CHECK.

    ``codes`` is an array of Python strings (None counts as a bad length).
    """
    codes = np.asarray(codes, dtype=object)
    out = np.zeros(len(codes), dtype=np.int8)
    lengths = np.fromiter((len(c) if isinstance(c, str) else -1 for c in codes), dtype=np.int64, count=len(codes))
    ok_len = lengths == LENGTH
    out[~ok_len] = BAD_LENGTH
    if not ok_len.any():
        return out
    sel = np.flatnonzero(ok_len)
    try:
        raw = np.array([codes[i] for i in sel], dtype="S18")
    except UnicodeEncodeError:
        raw = np.array([codes[i].encode("ascii", "replace") for i in sel], dtype="S18")
    mat = raw.view(np.uint8).reshape(len(sel), LENGTH)
    idx = _INDEX_OF[mat]
    bad_char = (idx < 0).any(axis=1)
    out[sel[bad_char]] = BAD_CHARACTER
    expected = (31 - (idx[:, : LENGTH - 1] @ WEIGHTS) % 31) % 31
    bad_check = ~bad_char & (expected != idx[:, LENGTH - 1])
    out[sel[bad_check]] = BAD_CHECK
    return out


def generate(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct, valid, realistic USCCs as an array of Python strings.

    Layout: authority+category (2), division code (6), organisation code with its
    own GB 11714 check digit (9), USCC check character (1).
    """
    codes = np.empty(0, dtype="S18")
    need = n
    while need > 0:
        batch = _generate_batch(int(need * 1.02) + 16, rng)
        codes = np.unique(np.concatenate([codes, batch]))
        need = n - len(codes)
    rng.shuffle(codes)
    return codes[:n].astype("U18").astype(object)


def _generate_batch(n: int, rng: np.random.Generator) -> np.ndarray:
    mat = np.empty((n, LENGTH), dtype=np.uint8)
    prefix = _PREFIXES[rng.choice(len(_PREFIXES), size=n, p=_PREFIX_P)]
    mat[:, 0:2] = prefix.view(np.uint8).reshape(n, 2)
    division = DIVISIONS[rng.integers(0, len(DIVISIONS), size=n)]
    mat[:, 2:8] = division.view(np.uint8).reshape(n, 6)
    body = rng.integers(0, len(_ORG_BODY), size=(n, 8))
    mat[:, 8:16] = _ORG_BODY[body]
    org_check = 11 - (_ORG_VALUE[body] @ _ORG_WEIGHTS) % 11
    org_char = np.where(org_check == 10, ord("X"), np.where(org_check == 11, ord("0"), ord("0") + org_check % 10))
    mat[:, 16] = org_char
    idx = _INDEX_OF[mat[:, : LENGTH - 1]]
    check = (31 - (idx @ WEIGHTS) % 31) % 31
    mat[:, 17] = _ALPHABET_BYTES[check]
    return mat.reshape(-1).view("S18")
