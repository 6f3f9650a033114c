"""Multi-party PSI: equals plain set intersection, agreed order, no ID in any payload, strict input."""

import hashlib

import numpy as np
import pytest

from fedcredit.crypto.blinding import BlindingKey, hash_ids
from fedcredit.crypto.errors import CryptoError
from fedcredit.data import uscc
from fedcredit.common.errors import ProtocolError
from fedcredit.protocols.errors import InputError
from fedcredit.common.wire import Message
from fedcredit.crypto.identity import Identity
from fedcredit.protocols.loop import drive
from fedcredit.protocols.psi import PsiCoordinator, PsiParty
from fedcredit.protocols.relay import SealedRelay

POOL = uscc.generate(6000, np.random.default_rng(11))


_IDENTITIES = {name: Identity.generate(name) for name in ("bank", "tax", "utilities", "court")}


def relays_for(roles):
    """A sealing endpoint per party, each knowing the others' public identities."""
    return {r: SealedRelay(_IDENTITIES[r], [_IDENTITIES[p].public for p in roles if p != r]) for r in roles}


def run_in_process(coord, parties, tap=None):
    return drive(coord, parties, relays_for(list(parties)), tap)


def _run(sets: dict[str, list[str]], run_id="r1", **kw):
    parties = {role: PsiParty(role, ids, **kw) for role, ids in sets.items()}
    coord = PsiCoordinator(run_id, list(sets))
    rounds = run_in_process(coord, parties)
    return coord, parties, rounds


def _check(sets, coord, parties):
    expected = set.intersection(*(set(v) for v in sets.values()))
    assert coord.size == len(expected)
    aligned = {role: [sets[role][i] for i in p.result.rows] for role, p in parties.items()}
    first = aligned["bank"]
    assert set(first) == expected and len(first) == len(expected)
    for role, ids in aligned.items():
        assert ids == first, f"{role} is not in the agreed order"
        assert parties[role].result.digest == coord.digest


def _draw(rng, n, lo=0, hi=len(POOL)):
    return [str(x) for x in rng.choice(POOL[lo:hi], size=n, replace=False)]


@pytest.mark.parametrize("seed", range(4))
def test_random_sets_three_parties(seed):
    rng = np.random.default_rng(seed)
    sets = {"bank": _draw(rng, 900), "tax": _draw(rng, 800), "utilities": _draw(rng, 700)}
    coord, parties, rounds = _run(sets)
    _check(sets, coord, parties)
    assert rounds == coord.rounds == 6


def test_four_parties_and_two_parties():
    rng = np.random.default_rng(5)
    sets = {"bank": _draw(rng, 500, 0, 1500), "tax": _draw(rng, 600, 0, 1500), "utilities": _draw(rng, 700, 0, 1500), "court": _draw(rng, 800, 0, 1500)}
    coord, parties, rounds = _run(sets)
    _check(sets, coord, parties)
    assert rounds == 7
    two = {"bank": sets["bank"], "tax": sets["tax"]}
    coord, parties, rounds = _run(two)
    _check(two, coord, parties)
    assert rounds == 5


def test_identical_disjoint_empty_and_unequal():
    ids = [str(x) for x in POOL[:300]]
    cases = [
        {"bank": ids, "tax": ids[::-1], "utilities": ids[100:] + ids[:100]},  # identical, different order
        {"bank": ids[:100], "tax": ids[100:200], "utilities": ids[200:]},  # disjoint
        {"bank": [], "tax": ids, "utilities": ids},  # empty bank
        {"bank": ids, "tax": [], "utilities": ids},  # empty host
        {"bank": ids[:3], "tax": [str(x) for x in POOL[:5000]], "utilities": ids[1:2] + ids[:1]},  # very unequal
    ]
    for sets in cases:
        coord, parties, _ = _run(sets)
        _check(sets, coord, parties)


def test_normalization_matches_across_parties():
    ids = [str(x) for x in POOL[:50]]
    sets = {"bank": ids, "tax": [f"  {i.lower()} " for i in ids[:30]], "utilities": ids[10:]}
    coord, parties, _ = _run(sets)
    assert coord.size == 20


def test_plain_string_ids():
    sets = {"bank": ["c-1", "c-2", "c-3"], "tax": ["C-2", "c-3", "x"], "utilities": ["c-3", "c-2"]}
    coord, parties, _ = _run(sets, id_kind="string")
    assert coord.size == 2


def _capture(sets, run_id="canary"):
    """Every encoded message that crosses a node boundary during a run."""
    parties = {role: PsiParty(role, ids) for role, ids in sets.items()}
    wire: list[bytes] = []
    run_in_process(PsiCoordinator(run_id, list(sets)), parties, tap=wire.append)
    return wire


def test_no_payload_contains_an_id_or_a_plain_hash_of_one():
    rng = np.random.default_rng(9)
    sets = {"bank": _draw(rng, 400), "tax": _draw(rng, 400), "utilities": _draw(rng, 400)}
    blob = b"".join(_capture(sets))
    all_ids = set().union(*map(set, sets.values()))
    domain_hashes = hash_ids(sorted(all_ids), b"fedcredit-psi/canary")
    for i, ident in enumerate(sorted(all_ids)):
        raw = ident.encode()
        forms = [raw, raw.lower(), raw.hex().encode(), hashlib.sha256(raw).digest(), hashlib.sha256(raw).hexdigest().encode(),
                 hashlib.md5(raw).digest(), domain_hashes[i * 32:(i + 1) * 32], ident[:12].encode()]
        for form in forms:
            assert form not in blob, f"{ident} leaks in some encoding"


def test_invalid_and_duplicate_ids_are_reported():
    ids = [str(x) for x in POOL[:20]]
    bad = ids[:5] + ["91440300192203821X", "short", "", ids[0]]
    with pytest.raises(InputError) as info:
        PsiParty("tax", bad)
    text = str(info.value)
    assert "tax" in text and "wrong check character (GB 32100-2015) (rows 5)" in text
    assert "not 18 characters long (rows 6)" in text and "empty IDs (rows 7)" in text
    assert "duplicate IDs (rows 0, 8)" in text
    party = PsiParty("tax", bad, on_invalid="drop")
    assert party.report.usable_rows.tolist() == [1, 2, 3, 4]
    sets = {"bank": ids, "tax": bad, "utilities": ids}
    parties = {"bank": PsiParty("bank", ids), "tax": party, "utilities": PsiParty("utilities", ids)}
    coord = PsiCoordinator("r", list(sets))
    run_in_process(coord, parties)
    assert coord.size == 4 and sorted(party.result.rows.tolist()) == [1, 2, 3, 4]


def test_bad_party_lists_and_options():
    with pytest.raises(InputError):
        PsiCoordinator("r", ["tax", "bank"])
    with pytest.raises(InputError):
        PsiCoordinator("r", ["bank"])
    with pytest.raises(InputError):
        PsiParty("bank", [], on_invalid="ignore")


def _started(sets):
    parties = {role: PsiParty(role, ids) for role, ids in sets.items()}
    coord = PsiCoordinator("r", list(sets))
    replies = [r for m in coord.start() for r in parties[m.receiver].handle(m)]
    return coord, parties, replies


SETS = {"bank": [str(x) for x in POOL[:40]], "tax": [str(x) for x in POOL[20:60]], "utilities": [str(x) for x in POOL[10:50]]}


def test_malformed_messages_are_rejected():
    coord, parties, replies = _started(SETS)
    blind_to_tax = next(m for m in replies if m.receiver == "tax")
    tax = parties["tax"]
    with pytest.raises(ProtocolError, match="bad magic"):
        Message.from_bytes(b"XXXX" + blind_to_tax.to_bytes()[4:])
    with pytest.raises(ProtocolError, match="header length"):
        Message.from_bytes(blind_to_tax.to_bytes()[:20])
    with pytest.raises(ProtocolError, match="whole number"):
        tax.handle(Message(**{**blind_to_tax.__dict__, "payload": blind_to_tax.payload[:-1]}))
    with pytest.raises(ProtocolError, match="expected"):
        tax.handle(Message(**{**blind_to_tax.__dict__, "meta": {**blind_to_tax.meta, "n": 3}}))
    with pytest.raises(ProtocolError, match="sender"):
        tax.handle(Message(**{**blind_to_tax.__dict__, "sender": "utilities"}))
    with pytest.raises(ProtocolError, match="receiver"):
        parties["utilities"].handle(blind_to_tax)
    with pytest.raises(ProtocolError, match="unexpected"):
        tax.handle(Message(**{**blind_to_tax.__dict__, "kind": "lr.gradient"}))
    with pytest.raises(ProtocolError, match="already started"):
        tax.handle(Message("psi.start", "coordinator", "tax", "r", 0, {"ring": ["bank", "tax", "utilities"]}))
    with pytest.raises(ProtocolError, match="ring"):
        PsiParty("tax", []).handle(Message("psi.start", "coordinator", "tax", "r", 0, {"ring": ["tax", "bank"]}))
    with pytest.raises(ProtocolError, match="meta field 'owner'"):
        tax.handle(Message(**{**blind_to_tax.__dict__, "meta": {**blind_to_tax.meta, "owner": "mallory"}}))
    with pytest.raises(ProtocolError, match="one reply from each"):
        coord.advance(replies[:2])
    with pytest.raises(ProtocolError, match="one reply from each"):
        coord.advance(replies + replies[:1])


def test_small_order_point_is_rejected():
    with pytest.raises(CryptoError, match="small order"):
        BlindingKey().blind(bytes(32))


def test_unsorted_or_foreign_final_list_is_rejected():
    coord, parties, replies = _started(SETS)
    outgoing = coord.advance(replies)
    for _ in range(3):
        replies = [r for m in outgoing for r in parties[m.receiver].handle(m)]
        outgoing = coord.advance(replies)
    (to_bank,) = outgoing
    assert to_bank.kind == "psi.hosts"
    (final,) = parties["bank"].handle(to_bank)
    assert final.meta["n"] >= 2
    swapped = final.payload[32:64] + final.payload[:32] + final.payload[64:]
    with pytest.raises(ProtocolError, match="not strictly sorted"):
        parties["tax"].handle(Message("psi.final", "coordinator", "tax", "r", final.step + 1, {"n": final.meta["n"]}, swapped))
    forged = Message(**{**final.__dict__, "payload": bytes(32 * final.meta["n"])})
    with pytest.raises(ProtocolError, match="outside the hosts' common set"):
        coord.advance([forged])


def test_parallel_blinding_equals_inline():
    from fedcredit.crypto.blinding import blind
    from fedcredit.crypto.parallel import WorkerPool

    points = hash_ids([str(x) for x in POOL[:3000]], b"par")
    key = BlindingKey()
    with WorkerPool(2, min_work=1) as pool:
        assert pool.chunks(10**9) == 2
        assert blind(key, points, pool) == key.blind(points)
        sets = {"bank": [str(x) for x in POOL[:500]], "tax": [str(x) for x in POOL[250:800]]}
        parties = {r: PsiParty(r, v, pool=pool) for r, v in sets.items()}
        coord = PsiCoordinator("p", list(sets))
        run_in_process(coord, parties)
        _check(sets, coord, parties)


def test_relayed_sets_are_sealed_from_the_coordinator():
    rng = np.random.default_rng(3)
    sets = {"bank": _draw(rng, 200), "tax": _draw(rng, 200), "utilities": _draw(rng, 200)}
    wire = [Message.from_bytes(b) for b in _capture(sets)]
    blind = [m for m in wire if m.kind == "psi.blind"]
    assert blind and all(m.sealed and m.meta == {} for m in blind)
    # the hosts' fully blinded sets (which the coordinator does see) never appear in a relayed payload
    full = b"".join(m.payload for m in wire if m.kind == "psi.full")
    for m in blind:
        for i in range(0, len(full), 32 * 37):
            assert full[i:i + 32] not in m.payload


def test_coordinator_cannot_alter_or_inject_relayed_messages():
    roles = ["bank", "tax", "utilities"]
    relays = relays_for(roles)
    parties = {r: PsiParty(r, SETS[r]) for r in roles}
    coord = PsiCoordinator("r", roles)
    replies = []
    for m in coord.start():
        replies += [relays[m.receiver].seal(x) for x in parties[m.receiver].handle(m)]
    to_tax = next(m for m in replies if m.receiver == "tax")
    flipped = to_tax.payload[:-1] + bytes([to_tax.payload[-1] ^ 1])
    with pytest.raises(ProtocolError, match="failed authentication"):
        relays["tax"].open(Message(**{**to_tax.__dict__, "payload": flipped}))
    with pytest.raises(ProtocolError, match="expected step"):
        relays["tax"].open(Message(**{**to_tax.__dict__, "step": 7}))
    with pytest.raises(ProtocolError, match="must be sealed"):
        relays["tax"].open(Message("psi.blind", "bank", "tax", "r", 1, {"owner": "bank", "hops": 1, "n": 0}))
    with pytest.raises(ProtocolError, match="wrong receiver"):
        relays["utilities"].open(Message(**{**to_tax.__dict__, "receiver": "utilities"}))
    inner = relays["tax"].open(to_tax)
    assert inner.kind == "psi.blind" and inner.meta["owner"] == "bank"
    with pytest.raises(ProtocolError, match="replay"):
        relays["tax"].open(to_tax)
