"""Sealed envelopes: round trip; tamper, replay, wrong receiver/key/AD and malformed input rejected."""

import pytest

from fedcredit.crypto import EnvelopeError, Identity, Mailbox, Outbox, ReplayError, seal
from fedcredit.crypto.envelope import parse


@pytest.fixture(scope="module")
def ids():
    return {name: Identity.generate(name) for name in ("bank", "tax", "utilities", "coordinator")}


def mailbox(ids, me="bank"):
    return Mailbox(ids[me], [i.public for n, i in ids.items() if n != me])


def test_roundtrip_and_header_binding(ids):
    box = mailbox(ids)
    blob = seal(ids["tax"], ids["bank"].public, b"histograms", run_id="run-7", step="sbt/tree0/hist", seq=3)
    opened = box.open(blob, sender="tax", run_id="run-7", step="sbt/tree0/hist")
    assert (opened.sender, opened.run_id, opened.step, opened.seq, opened.payload) == (
        "tax", "run-7", "sbt/tree0/hist", 3, b"histograms")
    assert b"histograms" not in blob


def test_replay_rejected(ids):
    box = mailbox(ids)
    blob = seal(ids["tax"], ids["bank"].public, b"x", run_id="r", step="s", seq=0)
    box.open(blob)
    with pytest.raises(ReplayError, match="'tax'.*replay"):
        box.open(blob)
    # a fresh seal with the same (sender, run, step, seq) is a replay as well
    with pytest.raises(ReplayError):
        box.open(seal(ids["tax"], ids["bank"].public, b"y", run_id="r", step="s", seq=0))


def test_outbox_numbers_messages(ids):
    out, box = Outbox(ids["tax"]), mailbox(ids)
    seqs = [box.open(out.seal(ids["bank"].public, b"m", run_id="r2", step="s")).seq for _ in range(3)]
    assert seqs == [0, 1, 2]


def test_tampering_any_byte_rejected(ids):
    blob = seal(ids["tax"], ids["bank"].public, b"payload-bytes", run_id="run", step="step", seq=1)
    header_len = len(parse(blob)[1])
    for pos in [header_len - 1, header_len - 13, header_len, len(blob) - 1, header_len - 60]:
        bad = bytearray(blob)
        bad[pos] ^= 0x01
        with pytest.raises(EnvelopeError, match="failed authentication|expected|replay|malformed"):
            mailbox(ids).open(bytes(bad))
    with pytest.raises(EnvelopeError, match="failed authentication"):
        mailbox(ids).open(blob[:-1] + bytes([blob[-1] ^ 0x80]))


def test_changed_associated_data_rejected(ids):
    blob = seal(ids["tax"], ids["bank"].public, b"p", run_id="run-a", step="step-1", seq=5)
    for old, new in [(b"run-a", b"run-b"), (b"step-1", b"step-2")]:
        with pytest.raises(EnvelopeError, match="failed authentication"):
            mailbox(ids).open(blob.replace(old, new, 1))
    seq_pos = len(parse(blob)[1]) - 52
    bumped = blob[:seq_pos + 7] + bytes([6]) + blob[seq_pos + 8:]
    with pytest.raises(EnvelopeError, match="seq 6.*failed authentication"):
        mailbox(ids).open(bumped)


def test_wrong_receiver_and_wrong_key_rejected(ids):
    blob = seal(ids["tax"], ids["bank"].public, b"p", run_id="r", step="s", seq=0)
    with pytest.raises(EnvelopeError, match="wrong receiver"):
        mailbox(ids, "utilities").open(blob)
    impostor = Identity.generate("bank")  # same name, different keys: cannot open
    with pytest.raises(EnvelopeError, match="failed authentication"):
        Mailbox(impostor, [ids["tax"].public]).open(blob)
    # the coordinator relays it but cannot forge it as coming from tax
    forged = seal(Identity.generate("tax"), ids["bank"].public, b"evil", run_id="r", step="s", seq=9)
    with pytest.raises(EnvelopeError, match="not sealed by 'tax'"):
        mailbox(ids).open(forged)


def test_unknown_sender_and_expectations(ids):
    blob = seal(ids["tax"], ids["bank"].public, b"p", run_id="r", step="s", seq=0)
    with pytest.raises(EnvelopeError, match="not a known identity"):
        Mailbox(ids["bank"], [ids["utilities"].public]).open(blob)
    with pytest.raises(EnvelopeError, match="expected step 'other'"):
        mailbox(ids).open(blob, step="other")
    with pytest.raises(EnvelopeError, match="expected sender"):
        mailbox(ids).open(blob, sender="utilities")


def test_malformed_envelopes_rejected(ids):
    blob = seal(ids["tax"], ids["bank"].public, b"p", run_id="r", step="s", seq=0)
    box = mailbox(ids)
    for bad, msg in [(b"", "magic"), (b"XXXX" + blob[4:], "magic"), (blob[:4] + b"\x02" + blob[5:], "version"),
                     (blob[:20], "truncated|too short"), (blob[:-17], "too short"), ("text", "bytes")]:
        with pytest.raises(EnvelopeError, match=msg):
            box.open(bad)


def test_bad_seal_arguments(ids):
    with pytest.raises(EnvelopeError, match="seq"):
        seal(ids["tax"], ids["bank"].public, b"p", run_id="r", step="s", seq=-1)
    with pytest.raises(EnvelopeError, match="run id"):
        seal(ids["tax"], ids["bank"].public, b"p", run_id="", step="s", seq=0)
    with pytest.raises(EnvelopeError, match="payload"):
        seal(ids["tax"], ids["bank"].public, "p", run_id="r", step="s", seq=0)
