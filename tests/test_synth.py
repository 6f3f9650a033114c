import numpy as np
import pytest

from fedcredit.data import synth, uscc
from fedcredit.data.reference import signal_split
from fedcredit.data.schema import NODE_ROLES, schema_for
from fedcredit.data.validate import validate_table
from fedcredit.common.errors import FedCreditError


def test_same_seed_same_tables_other_seed_differs():
    a, b, c = synth.generate(3000, seed=3), synth.generate(3000, seed=3), synth.generate(3000, seed=4)
    for role in NODE_ROLES:
        assert a[role].equals(b[role])
        assert not a[role].equals(c[role])


def test_tables_follow_their_schemas_and_validate_clean(tables):
    for role in NODE_ROLES:
        assert tables[role].column_names == schema_for(role).names
        assert validate_table(tables[role], schema_for(role), role) == []


def test_ids_are_valid_uscc_and_unique(tables):
    for role in NODE_ROLES:
        ids = np.asarray(tables[role].column("uscc").to_pylist(), dtype=object)
        assert (uscc.invalid_mask(ids) == 0).all()
        assert len(set(ids)) == len(ids)


def _id_sets(tables):
    return {role: set(tables[role].column("uscc").to_pylist()) for role in NODE_ROLES}


def test_coverage_differs_per_node_and_some_are_host_only(tables):
    sets = _id_sets(tables)
    population = set.union(*sets.values())
    assert len(population) == 20_000
    for role, share in synth.COVERAGE.items():
        assert abs(len(sets[role]) / len(population) - share) < 0.015, role
    host_only = (sets["tax"] | sets["utilities"]) - sets["bank"]
    assert 0.03 < len(host_only) / len(population) < 0.07
    assert sets["tax"] - sets["utilities"] and sets["utilities"] - sets["tax"]


def test_row_order_differs_per_node(tables):
    common = set.intersection(*_id_sets(tables).values())
    orders = {role: [i for i in tables[role].column("uscc").to_pylist() if i in common] for role in NODE_ROLES}
    assert orders["bank"] != orders["tax"] and orders["tax"] != orders["utilities"]
    assert sorted(orders["bank"]) == sorted(orders["tax"])


def test_realistic_missing_values_only_in_nullable_columns(tables):
    for role in NODE_ROLES:
        for col in schema_for(role).columns:
            nulls = tables[role].column(col.name).null_count
            if col.nullable:
                assert nulls > 0, f"{role}.{col.name} should have some missing values"
            else:
                assert nulls == 0, f"{role}.{col.name} must be complete"
    gas_missing = tables["utilities"].column("gas_m3_12m").null_count / tables["utilities"].num_rows
    assert 0.3 < gas_missing < 0.8  # firms without a gas connection


def test_features_are_plausible(tables):
    tax = tables["tax"].to_pandas()
    assert 1e5 < tax["declared_revenue_cny"].median() < 2e7  # SMEs: roughly 0.1M to 20M CNY
    by_industry = tax.groupby("industry")["declared_revenue_cny"].median()
    assert by_industry["construction"] > by_industry["hospitality"]  # revenue depends on industry
    assert set(tax["taxpayer_credit_rating"]) == {"A", "B", "M", "C", "D"}
    kwh = tables["utilities"].to_pandas().filter(like="elec_kwh_m")
    assert kwh.shape[1] == 12 and (kwh.stack().dropna() >= 0).all()
    bank = tables["bank"].to_pandas()
    assert 0.03 < bank["default_12m"].mean() < 0.12
    assert (bank["max_dpd_24m"] > 0).mean() > 0.05
    # defaulters look worse on every node
    joined = bank.merge(tax, on="uscc").merge(tables["utilities"].to_pandas(), on="uscc")
    bad, good = joined[joined.default_12m == 1], joined[joined.default_12m == 0]
    assert bad["max_dpd_24m"].mean() > good["max_dpd_24m"].mean()
    assert (bad["tax_arrears_cny"] > 0).mean() > 2 * (good["tax_arrears_cny"] > 0).mean()
    assert bad["disconnection_notices_24m"].mean() > good["disconnection_notices_24m"].mean()


def test_label_signal_is_split_across_nodes(tables):
    auc = signal_split(tables, seed=0)
    assert auc["gain_all_vs_bank"] >= 0.08, auc
    assert auc["bank+tax"] > auc["bank"] + 0.02, auc
    assert auc["bank+utilities"] > auc["bank"] + 0.02, auc
    assert auc["all"] > max(auc["bank+tax"], auc["bank+utilities"]), auc


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(FedCreditError, match="rows"):
        synth.generate(5)
    with pytest.raises(FedCreditError, match="seed"):
        synth.generate(100, seed=-1)
    with pytest.raises(FedCreditError, match="format"):
        synth.write_nodes(synth.generate(100), tmp_path, "xlsx")


def test_the_court_is_drawn_from_the_same_population_without_changing_the_others():
    from fedcredit.data import synth_court
    from fedcredit.data.schema import custom_schema

    plain, with_court = synth.generate(3000, seed=3), synth.generate(3000, seed=3, court=True)
    assert set(with_court) == {*NODE_ROLES, "court"}
    for role in NODE_ROLES:
        assert plain[role].equals(with_court[role])
    court = with_court["court"]
    assert court.column_names == [synth_court.ID_COLUMN, *synth_court.COLUMNS]
    schema = custom_schema("court").with_options(synth_court.ID_COLUMN, "uscc", synth_court.COLUMNS)
    assert validate_table(court, schema, "court") == []
    ids = court.column(synth_court.ID_COLUMN).to_pylist()
    assert abs(len(ids) / 3000 - synth_court.COVERAGE) < 0.03 and set(ids) <= set().union(*_id_sets(plain).values())
    assert ids != sorted(ids)  # its own order
    assert set(court.column("dishonest_debtor_listed").to_pylist()) == {"yes", "no"}
    assert synth.generate(3000, seed=3, court=True)["court"].equals(court)
