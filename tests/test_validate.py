"""Every validation error path: each problem names the file, the column and the first rows."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fedcredit.data.io import write_table
from fedcredit.data.schema import parse_extra, schema_for
from fedcredit.data.validate import ValidationError, load_node, validate_file
from fedcredit.common.errors import FedCreditError

BANK = schema_for("bank")
TAX = schema_for("tax")


@pytest.fixture
def bank(tables):
    return tables["bank"].slice(0, 200)


def _set(table: pa.Table, column: str, rows: list[int], value) -> pa.Table:
    """``table`` with ``value`` written into ``rows`` of ``column`` (text turns the column into text)."""
    values = table.column(column).to_pylist()
    for r in rows:
        values[r] = value
    typ = table.schema.field(column).type
    if isinstance(value, str) and not pa.types.is_string(typ):
        values, typ = [None if v is None else str(v) for v in values], pa.string()
    return table.set_column(table.column_names.index(column), pa.field(column, typ), pa.array(values, type=typ))


def _problems(table, tmp_path, fmt="parquet", schema=BANK):
    path = write_table(table, tmp_path / f"bank.{fmt}")
    _, problems = validate_file(path, schema)
    return path, problems


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_valid_file_loads(bank, tmp_path, fmt):
    path = write_table(bank, tmp_path / f"bank.{fmt}")
    node = load_node(path, BANK)
    assert len(node) == 200 and node.label.tolist() == bank.column("default_12m").to_pylist()
    assert list(node.features.columns) == [c.name for c in BANK.feature_columns]


def test_missing_file(tmp_path):
    _, problems = validate_file(tmp_path / "nope.parquet", BANK)
    assert len(problems) == 1 and "nope.parquet" in str(problems[0]) and "not found" in str(problems[0])


def test_unsupported_extension(tmp_path):
    (tmp_path / "bank.xlsx").write_text("x")
    _, problems = validate_file(tmp_path / "bank.xlsx", BANK)
    assert "unsupported file type" in str(problems[0])


@pytest.mark.parametrize("content,expect", [("", "empty (0 bytes)"), ("uscc,loan_balance_cny\n", "no data rows")])
def test_empty_file(tmp_path, content, expect):
    (tmp_path / "bank.csv").write_text(content)
    _, problems = validate_file(tmp_path / "bank.csv", BANK)
    assert any(expect in str(p) for p in problems), problems


def test_corrupt_parquet(tmp_path):
    (tmp_path / "bank.parquet").write_bytes(b"PAR1 not really parquet")
    _, problems = validate_file(tmp_path / "bank.parquet", BANK)
    assert "cannot be read as parquet" in str(problems[0])


def test_missing_id_and_label_columns(bank, tmp_path):
    table = bank.drop_columns(["uscc", "default_12m"])
    _, problems = _problems(table, tmp_path)
    text = "\n".join(map(str, problems))
    assert "column 'uscc': ID column is missing" in text
    assert "column 'default_12m': label column is missing" in text


def test_duplicate_ids_name_both_rows(bank, tmp_path):
    table = _set(bank, "uscc", [9], bank.column("uscc")[2].as_py())
    _, problems = _problems(table, tmp_path)
    assert len(problems) == 1
    p = problems[0]
    assert p.column == "uscc" and "duplicate" in p.message and p.rows == (3, 10)


def test_invalid_check_character_csv_names_row_and_line(bank, tmp_path):
    code = bank.column("uscc")[4].as_py()
    wrong = code[:17] + ("0" if code[17] != "0" else "1")
    table = _set(bank, "uscc", [4], wrong)
    table = _set(table, "uscc", [6], "12345")
    _, problems = _problems(table, tmp_path, "csv")
    text = "\n".join(map(str, problems))
    assert "wrong check character" in text and "first rows: 5 (line 6)" in text
    assert "not 18 characters" in text and "7 (line 8)" in text


def test_lowercase_and_spaces_are_normalized(bank, tmp_path):
    code = bank.column("uscc")[0].as_py()
    table = _set(bank, "uscc", [0], f"  {code.lower()} ")
    path, problems = _problems(table, tmp_path)
    assert problems == []
    assert load_node(path, BANK).ids[0] == code


def test_missing_ids(bank, tmp_path):
    _, problems = _problems(_set(bank, "uscc", [1, 3], None), tmp_path)
    assert any("missing or empty IDs" in str(p) and p.rows == (2, 4) for p in problems)


def test_plain_string_ids_allowed_when_configured(bank, tmp_path):
    table = _set(bank, "uscc", [0], "customer-000017")
    _, problems = _problems(table, tmp_path, schema=BANK.with_options(id_kind="string"))
    assert problems == []
    _, problems = _problems(table, tmp_path)
    assert problems and "uscc" == problems[0].column


def test_custom_id_column(bank, tmp_path):
    table = bank.rename_columns(["entity_id" if c == "uscc" else c for c in bank.column_names])
    _, problems = _problems(table, tmp_path, schema=BANK.with_options(id_column="entity_id"))
    assert problems == []


def test_wrong_column_types(bank, tmp_path):
    table = _set(bank, "loan_balance_cny", [7], "12k")  # becomes a text column
    _, problems = _problems(table, tmp_path, "csv")
    assert any(p.column == "loan_balance_cny" and "text where a number is expected" in p.message and p.rows == (8,) for p in problems), problems
    table = bank.set_column(bank.column_names.index("credit_lines"), "credit_lines", pa.array([True] * bank.num_rows))
    _, problems = _problems(table, tmp_path)
    assert any(p.column == "credit_lines" and "bool" in p.message for p in problems), problems


def test_fractional_and_out_of_range_values(bank, tmp_path):
    table = bank.set_column(bank.column_names.index("credit_lines"), "credit_lines", pa.array(np.full(bank.num_rows, 1.5)))
    table = _set(table, "max_dpd_24m", [0], -3)
    _, problems = _problems(table, tmp_path)
    text = "\n".join(map(str, problems))
    assert "column 'credit_lines': has fractional values" in text
    assert "column 'max_dpd_24m': has values below 0" in text


def test_missing_values_in_required_column(bank, tmp_path):
    _, problems = _problems(_set(bank, "loan_balance_cny", [0, 5], None), tmp_path, "csv")
    assert any(p.column == "loan_balance_cny" and "missing values" in p.message and p.rows == (1, 6) for p in problems)


def test_missing_and_non_binary_labels(bank, tmp_path):
    table = _set(bank, "default_12m", [2], None)
    table = _set(table, "default_12m", [3, 8], 2)
    _, problems = _problems(table, tmp_path)
    text = "\n".join(map(str, problems))
    assert "has missing labels" in text and "first rows: 3" in text
    assert "non-binary labels" in text and "first rows: 4, 9" in text


def test_text_labels(bank, tmp_path):
    table = bank.set_column(bank.column_names.index("default_12m"), "default_12m", pa.array(["yes"] * bank.num_rows))
    _, problems = _problems(table, tmp_path)
    assert any(p.column == "default_12m" and "expected labels 0 or 1" in p.message for p in problems)


def test_single_class_label(bank, tmp_path):
    table = bank.set_column(bank.column_names.index("default_12m"), "default_12m", pa.array(np.zeros(bank.num_rows, dtype=np.int8)))
    _, problems = _problems(table, tmp_path)
    assert any("only one class" in p.message for p in problems)


def test_category_values(tables, tmp_path):
    tax = _set(tables["tax"].slice(0, 50), "taxpayer_credit_rating", [1], "AAA")
    path = write_table(tax, tmp_path / "tax.csv")
    _, problems = validate_file(path, TAX)
    assert any(p.column == "taxpayer_credit_rating" and "outside {A, B, M, C, D}" in p.message and p.rows == (2,) for p in problems)


def test_undeclared_and_extra_columns(bank, tmp_path):
    table = bank.append_column("court_cases_5y", pa.array(np.arange(bank.num_rows)))
    _, problems = _problems(table, tmp_path)
    assert any(p.column == "court_cases_5y" and "not declared" in p.message for p in problems)
    _, problems = _problems(table, tmp_path, schema=BANK.with_options(extra=parse_extra(["court_cases_5y:int"])))
    assert problems == []


def test_host_role_with_extra_columns(bank, tmp_path):
    table = bank.select(["uscc"]).append_column("court_cases_5y", pa.array(np.arange(bank.num_rows)))
    path = write_table(table, tmp_path / "court.csv")
    node = load_node(path, schema_for("host").with_options(extra={"court_cases_5y": "int"}))
    assert node.label is None and list(node.features.columns) == ["court_cases_5y"]


def test_every_problem_is_reported_at_once(bank, tmp_path):
    table = _set(bank, "uscc", [0], "bad")
    table = _set(table, "default_12m", [1], 7)
    table = table.drop_columns(["credit_lines"])
    with pytest.raises(ValidationError) as info:
        load_node(write_table(table, tmp_path / "bank.parquet"), BANK)
    assert len(info.value.problems) == 3
    assert "3 problem(s)" in str(info.value)


def test_duplicate_header_column(tmp_path, bank):
    path = write_table(bank, tmp_path / "bank.csv")
    lines = path.read_text().splitlines()
    lines[0] = lines[0].replace('"credit_lines"', '"uscc"')
    path.write_text("\n".join(lines) + "\n")
    _, problems = validate_file(path, BANK)
    assert any(p.column == "uscc" and "more than once" in p.message for p in problems)


def test_bad_schema_options():
    with pytest.raises(FedCreditError, match="ID kind"):
        BANK.with_options(id_kind="uuid")
    with pytest.raises(FedCreditError, match="already declared"):
        BANK.with_options(extra={"credit_lines": "int"})
    with pytest.raises(FedCreditError, match="NAME:KIND"):
        parse_extra(["oops"])
    with pytest.raises(FedCreditError, match="unknown role"):
        schema_for("court")


def test_write_is_atomic(bank, tmp_path):
    path = write_table(bank, tmp_path / "bank.parquet")
    before = path.read_bytes()

    with pytest.raises(Exception):
        write_table("not a table", path)  # type: ignore[arg-type]
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.parquet"]
    assert pq.read_table(path).equals(bank)
