import numpy as np
import pytest

from fedcredit.data import uscc

# Codes of real, well-known enterprises (published on their business licences).
REAL = ["914403001922038216", "91440300708461136T", "91110000600037341L", "91350100M000100Y43"]


@pytest.mark.parametrize("code", REAL)
def test_real_codes_are_valid(code):
    assert uscc.is_valid(code)
    assert uscc.check_character(code[:17]) == code[17]


@pytest.mark.parametrize("code", REAL)
def test_any_changed_check_character_is_invalid(code):
    for c in uscc.ALPHABET:
        if c != code[17]:
            assert not uscc.is_valid(code[:17] + c)


def test_reasons():
    codes = np.array(["914403001922038216", "91440300192203821", "9144030019220382I6", "914403001922038217", None], dtype=object)
    assert uscc.invalid_mask(codes).tolist() == [uscc.OK, uscc.BAD_LENGTH, uscc.BAD_CHARACTER, uscc.BAD_CHECK, uscc.BAD_LENGTH]


def test_single_character_changes_in_body_are_caught():
    code = REAL[0]
    rng = np.random.default_rng(0)
    for pos in rng.integers(0, 17, 50):
        new = uscc.ALPHABET[(uscc.ALPHABET.index(code[pos]) + 1 + rng.integers(0, 29)) % 31]
        mutated = code[:pos] + new + code[pos + 1 :]
        assert not uscc.is_valid(mutated)


def test_generated_codes_valid_distinct_and_structured():
    codes = uscc.generate(50_000, np.random.default_rng(1))
    assert len(codes) == 50_000 and len(set(codes)) == 50_000
    assert (uscc.invalid_mask(codes) == 0).all()
    assert all(c[:2] in ("91", "92", "93") for c in codes[:1000])
    divisions = {d.decode() for d in uscc.DIVISIONS}
    assert all(c[2:8] in divisions for c in codes[:1000])


def test_generated_codes_match_scalar_check():
    codes = uscc.generate(200, np.random.default_rng(2))
    assert all(uscc.check_character(c[:17]) == c[17] for c in codes)


def test_check_character_rejects_bad_body():
    with pytest.raises(ValueError):
        uscc.check_character("9144030019220382")
    with pytest.raises(ValueError):
        uscc.check_character("91440300192203821O"[:17].replace("1", "O"))
