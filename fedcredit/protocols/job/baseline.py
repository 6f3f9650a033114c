"""The bank-only baseline, trained inside the bank: no message of it leaves the bank's node.

The baseline answers "what could the bank do with its own data alone?". Its only party is
the bank, which holds every input (its features and its labels), so encrypting its
messages protected nothing from anyone: the bank knows its own scores, and the
coordinator would only have seen what it decrypts anyway. Running it through the
federation still cost one Paillier encryption per training row and iteration at the
coordinator — half the job's cryptographic work at a million enterprises — and one
more model run in every round. So the bank drives the same optimizer (the model's own
coordinator object and party, on the plaintext arithmetic) in its own process, with
the same bins, split and settings as the joint model; the decrypted values of the
protocol are exact integers, so the baseline is the one the federation would have
trained. Its metrics reach the coordinator in the bank's report, as before.
"""

from __future__ import annotations

from dataclasses import replace

from fedcredit.protocols import secureboost, vertical_lr
from fedcredit.protocols.loop import drive

#: a baseline's model runs are driven with this arithmetic: nothing crosses a node boundary
ALONE_BACKEND = "mock"


def trained_at_bank(parties) -> bool:
    """True for a model run whose only party is the bank: the bank trains it by itself."""
    return list(parties) == [vertical_lr.BANK]


def train_alone(run_id: str, party, settings, pool=None) -> int:
    """Train ``party`` (the bank's, of run ``run_id``) by itself and score its rows; returns the rounds run."""
    if settings.model == "secureboost":
        coordinator = secureboost.SbCoordinator(run_id, [vertical_lr.BANK], replace(settings.sb_config(), backend=ALONE_BACKEND))
    else:
        coordinator = vertical_lr.LrCoordinator(run_id, [vertical_lr.BANK], replace(settings.lr_config(), backend=ALONE_BACKEND),
                                                pool=pool, deployment=False)
    return drive(coordinator, {vertical_lr.BANK: party})
