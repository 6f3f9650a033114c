"""The notebook API keeps each party's view apart and returns pandas objects."""

import pytest

from fedcredit.api import Federation
from fedcredit.common.errors import FedCreditError


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    fed = Federation.synthetic(rows=2500, seed=3, out=tmp_path_factory.mktemp("api"), key_bits=1024, max_iter=10)
    with pytest.raises(FedCreditError, match="fit"):
        fed.evaluate()
    return fed.fit()


def test_views(fitted):
    metrics = fitted.evaluate()
    assert metrics["test_auc"] > metrics["bank_only_auc"]
    scores = fitted.score()
    assert list(scores.columns) == ["id", "split", "score"]
    with pytest.raises(FedCreditError, match="only the bank"):
        fitted.score("tax")
    assert set(fitted.labelled_scores().columns) >= {"id", "score", "default"}
    assert not fitted.history().empty and "loss" in fitted.history()
    tax = fitted.model("tax")
    assert tax["column"].str.startswith("declared_revenue_cny").any()
    assert not tax["column"].str.contains("loan_balance").any()
    limits = fitted.limits()
    assert set(limits["grade"]) <= {"A", "B", "C", "D"} and len(limits) == len(scores)
    assert fitted.report_path.exists()
