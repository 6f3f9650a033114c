"""Signed publication of limits: round trips, verification, and tampering detection down to the cell."""

import json
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from fedcredit.cli.limits import limits_app
from fedcredit.crypto import Identity, PublicIdentity
from fedcredit.data import uscc
from fedcredit.data.io import write_table
from fedcredit.scoring.policy import LimitPolicy
from fedcredit.scoring.publish import COLUMNS, LimitsError, VerificationError, publish_limits, verify_limits

FORMATS = ("parquet", "csv")


def limits_table(n=30, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    policy = LimitPolicy()
    p = rng.beta(1, 12, n)
    points, grades = policy.grade(p)
    codes = [["TAX_ARREARS", "LATE_UTILITY_PAYMENTS"], [], ["DPD_30"]]
    return pd.DataFrame({"uscc": uscc.generate(n, rng), "score": points, "grade": grades, "pd": p,
                         "limit": policy.limits(grades), "reason_codes": [codes[i % 3] for i in range(n)]})


@pytest.fixture(scope="module")
def signer():
    return Identity.generate("coordinator")


@pytest.fixture(scope="module")
def published(tmp_path_factory, signer):
    out = tmp_path_factory.mktemp("limits")
    table = limits_table()
    paths = publish_limits(table, out, signer, "scorecard-lr-v1")
    signer.public.save(out / "coordinator.pub.json")
    return table, paths


def copy_of(published, tmp_path):
    """A private copy of the published directory that a test may tamper with."""
    table, paths = published
    folder = tmp_path / "copy"
    shutil.copytree(paths["parquet"].parent, folder)
    return table, {k: folder / p.name for k, p in paths.items()}


def read_back(path) -> pa.Table:
    if path.suffix == ".parquet":
        return pq.read_table(path)
    import pyarrow.csv as pacsv
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"uscc": pa.string(), "grade": pa.string(), "reason_codes": pa.string(),
                      "model_version": pa.string(), "limit": pa.int64()}, strings_can_be_null=False))


def test_round_trip_both_formats(published, signer):
    table, paths = published
    assert set(paths) == {"parquet", "csv", "signature"}
    expected = table.sort_values("uscc").reset_index(drop=True)
    for fmt in FORMATS:
        back = read_back(paths[fmt]).to_pandas()
        assert list(back.columns) == list(COLUMNS)
        assert back["uscc"].tolist() == expected["uscc"].tolist()  # published sorted by uscc
        assert np.array_equal(back["score"].to_numpy(), expected["score"].to_numpy())  # bit-exact floats
        assert np.array_equal(back["pd"].to_numpy(), expected["pd"].to_numpy())
        assert back["limit"].tolist() == expected["limit"].tolist()
        assert set(back["model_version"]) == {"scorecard-lr-v1"}
        report = verify_limits(paths[fmt], signer.public)
        assert (report.rows, report.signer, report.fingerprint) == (30, "coordinator", signer.fingerprint)
    assert set(read_back(paths["csv"]).to_pandas()["reason_codes"]) == {"TAX_ARREARS;LATE_UTILITY_PAYMENTS", "", "DPD_30"}
    doc = json.loads(paths["signature"].read_text())
    assert doc["algorithm"] == "Ed25519" and doc["signer_fingerprint"] == signer.fingerprint and len(doc["digest"]) == 64


def test_same_digest_for_both_formats_and_publication_is_deterministic(published, signer, tmp_path):
    table, paths = published
    a = verify_limits(paths["parquet"], signer.public)
    b = verify_limits(paths["csv"], signer.public)
    assert a.digest == b.digest
    again = publish_limits(table.sample(frac=1.0, random_state=1), tmp_path, signer, "scorecard-lr-v1")
    assert again["signature"].read_bytes() == paths["signature"].read_bytes()  # row order of the input is irrelevant


def _tampered(value, column, rng):
    if column == "uscc":
        return value[:-1] + ("X" if value[-1] != "X" else "Y")
    if column in ("score", "pd"):
        return float(np.nextafter(value, np.inf if rng.random() < 0.5 else -np.inf))  # the smallest possible change
    if column == "grade":
        return rng.choice([g for g in "ABCD" if g != value])
    if column == "limit":
        return value + int(rng.choice([-1, 1, 1000])) if value > 1000 else value + 1
    if column == "reason_codes":
        return value + ";X" if value else "X"
    return value + "-edited"


def test_any_single_changed_cell_is_named(published, signer, tmp_path):
    """200 random single-cell edits across both formats: every one fails and names its row and column."""
    _, paths = copy_of(published, tmp_path)
    rng = np.random.default_rng(2024)
    originals = {fmt: read_back(paths[fmt]) for fmt in FORMATS}
    for trial in range(200):
        fmt = FORMATS[trial % 2]
        table = originals[fmt]
        row, column = int(rng.integers(table.num_rows)), COLUMNS[int(rng.integers(len(COLUMNS)))]
        values = table.column(column).to_pylist()
        values[row] = _tampered(values[row], column, rng)
        bad = table.set_column(COLUMNS.index(column), column, pa.array(values, table.schema.field(column).type))
        write_table(bad, paths[fmt], fmt)
        with pytest.raises(VerificationError) as info:
            verify_limits(paths[fmt], signer.public)
        message = str(info.value)
        assert info.value.kind == "content", message
        assert f"row {row + 1} (" in message and f"cell '{column}' changed" in message, message
    for fmt in FORMATS:  # restoring the original content restores a passing verification
        write_table(originals[fmt], paths[fmt], fmt)
        verify_limits(paths[fmt], signer.public)


def test_raw_csv_edit_is_named_with_its_line(published, signer, tmp_path):
    _, paths = copy_of(published, tmp_path)
    lines = paths["csv"].read_text().splitlines(keepends=True)
    fields = lines[5].split(",")
    fields[4] = str(int(fields[4]) + 1)
    lines[5] = ",".join(fields)
    paths["csv"].write_text("".join(lines))
    with pytest.raises(VerificationError, match=r"row 5 \(line 6, uscc .*\): cell 'limit' changed"):
        verify_limits(paths["csv"], signer.public)


def test_reordered_rows_and_reformatted_csv_still_verify(published, signer, tmp_path):
    """The digest is over canonical rows: row order and CSV quoting are presentation, not content."""
    _, paths = copy_of(published, tmp_path)
    for fmt in FORMATS:
        table = read_back(paths[fmt])
        write_table(table.take(np.random.default_rng(5).permutation(table.num_rows)), paths[fmt], fmt)
        verify_limits(paths[fmt], signer.public)
    text = paths["csv"].read_text().replace('"A"', "A").replace('"scorecard-lr-v1"', "scorecard-lr-v1")
    paths["csv"].write_text(text.replace("\n", "\r\n"))
    verify_limits(paths["csv"], signer.public)


@pytest.mark.parametrize("fmt", FORMATS)
def test_deleted_added_and_duplicated_rows(published, signer, tmp_path, fmt):
    _, paths = copy_of(published, tmp_path)
    table = read_back(paths[fmt])
    gone = table.column("uscc")[7].as_py()
    write_table(table.filter(pa.array([i != 7 for i in range(table.num_rows)])), paths[fmt], fmt)
    with pytest.raises(VerificationError, match=f"signed row for uscc {gone} is missing"):
        verify_limits(paths[fmt], signer.public)

    extra = pa.table({c: pa.array([v], table.schema.field(c).type) for c, v in zip(
        COLUMNS, ["91110000MA00000000", 700.0, "A", 0.001, 5_000_000, "", "scorecard-lr-v1"])})
    write_table(pa.concat_tables([table, extra]), paths[fmt], fmt)
    with pytest.raises(VerificationError, match=r"row 31 .*uscc 91110000MA00000000\): row added"):
        verify_limits(paths[fmt], signer.public)

    write_table(pa.concat_tables([table, table.slice(3, 1)]), paths[fmt], fmt)
    with pytest.raises(VerificationError, match="rows 4 and 31 share uscc") as info:
        verify_limits(paths[fmt], signer.public)
    assert info.value.kind == "duplicate"


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_extra_and_retyped_columns(published, signer, tmp_path, fmt):
    _, paths = copy_of(published, tmp_path)
    table = read_back(paths[fmt])
    write_table(table.drop_columns(["reason_codes"]), paths[fmt], fmt)
    with pytest.raises(VerificationError, match=r"missing column\(s\) \['reason_codes'\]") as info:
        verify_limits(paths[fmt], signer.public)
    assert info.value.kind == "columns"
    write_table(table.append_column("note", pa.array(["x"] * table.num_rows)), paths[fmt], fmt)
    with pytest.raises(VerificationError, match=r"extra column\(s\) \['note'\]"):
        verify_limits(paths[fmt], signer.public)
    write_table(table.select(["score", "uscc", *COLUMNS[2:]]), paths[fmt], fmt)
    with pytest.raises(VerificationError, match="columns out of order"):
        verify_limits(paths[fmt], signer.public)
    as_float = table.set_column(4, "limit", pa.array([v + 0.5 for v in table.column("limit").to_pylist()]))
    write_table(as_float, paths[fmt], fmt)
    expected = "column 'limit' has type double" if fmt == "parquet" else r"row 1 \(line 2\): cell 'limit' is not a whole number"
    with pytest.raises(VerificationError, match=expected) as info:
        verify_limits(paths[fmt], signer.public)
    assert info.value.kind == "type"


def test_truncated_files(published, signer, tmp_path):
    _, paths = copy_of(published, tmp_path)
    data = paths["parquet"].read_bytes()
    paths["parquet"].write_bytes(data[: len(data) // 2])
    with pytest.raises(VerificationError, match="cannot be read as Parquet") as info:
        verify_limits(paths["parquet"], signer.public)
    assert info.value.kind == "unreadable"
    text = paths["csv"].read_bytes()
    for cut in range(len(text) - 200, len(text) - 1, 7):  # every cut inside the last rows fails
        paths["csv"].write_bytes(text[:cut])
        with pytest.raises(VerificationError):
            verify_limits(paths["csv"], signer.public)
    paths["csv"].write_bytes(b"")
    with pytest.raises(VerificationError, match="file is empty"):
        verify_limits(paths["csv"], signer.public)


def test_signature_file_problems(published, signer, tmp_path):
    table, paths = copy_of(published, tmp_path)
    # another publication's signature (same key, different limits) does not vouch for this file
    other = publish_limits(limits_table(n=30, seed=9), tmp_path / "other", signer, "scorecard-lr-v1")
    with pytest.raises(VerificationError, match="is limits.sig.json the signature of this file") as info:
        verify_limits(paths["csv"], signer.public, other["signature"])
    assert info.value.kind == "content"
    same_rows = table.assign(limit=table["limit"] // 2)
    swapped = publish_limits(same_rows, tmp_path / "swapped", signer, "scorecard-lr-v1")
    with pytest.raises(VerificationError, match="cell 'limit' changed"):
        verify_limits(paths["parquet"], signer.public, swapped["signature"])

    stranger = Identity.generate("coordinator")  # same name, different key
    with pytest.raises(VerificationError, match="wrong key") as info:
        verify_limits(paths["parquet"], stranger.public)
    assert info.value.kind == "wrong-key"

    doc = json.loads(paths["signature"].read_text())
    forged = dict(doc, signer_fingerprint=stranger.fingerprint)  # claims the stranger signed it
    (tmp_path / "forged.json").write_text(json.dumps(forged))
    with pytest.raises(VerificationError, match="does not verify") as info:
        verify_limits(paths["parquet"], stranger.public, tmp_path / "forged.json")
    assert info.value.kind == "bad-signature"
    edited = dict(doc, rows=doc["rows"] - 1)
    (tmp_path / "edited.json").write_text(json.dumps(edited))
    with pytest.raises(VerificationError, match="signature file was altered"):
        verify_limits(paths["parquet"], signer.public, tmp_path / "edited.json")
    (tmp_path / "junk.json").write_text("{not json")
    with pytest.raises(VerificationError, match="not a readable signature file") as info:
        verify_limits(paths["parquet"], signer.public, tmp_path / "junk.json")
    assert info.value.kind == "bad-signature-file"

    paths["signature"].unlink()
    with pytest.raises(VerificationError, match="signature file not found") as info:
        verify_limits(paths["parquet"], signer.public)
    assert info.value.kind == "missing-signature"


def test_publication_refuses_bad_tables(tmp_path, signer):
    good = limits_table(n=5)
    cases = [
        (good.assign(uscc=[good["uscc"][0]] * 5), "uscc must be unique"),
        (good.assign(pd=[0.1, 0.2, 1.5, 0.1, 0.1]), "row 3: pd must lie in"),
        (good.assign(limit=[1, 2, -3, 4, 5]), "row 3: limit must be a whole, non-negative"),
        (good.assign(limit=[1, 2, 3.5, 4, 5]), "row 3: limit must be a whole"),
        (good.assign(score=[1, 2, np.nan, 4, 5]), "row 3: score must be a finite"),
        (good.assign(secret_revenue=1.0), "not published"),
        (good.drop(columns=["grade"]), "lacks column"),
        (good.assign(grade=["A", "B", "C\n", "D", "A"]), "control character"),
        (good.assign(reason_codes=[["A;B"]] * 5), "contains ';'"),
        (good.assign(model_version="other"), "differs from model_version"),
        (good.iloc[:0], "no rows"),
    ]
    for table, message in cases:
        with pytest.raises(LimitsError, match=message):
            publish_limits(table, tmp_path, signer, "v1")
    assert not list(tmp_path.iterdir())  # nothing written for a refused table


def test_cli_verify(published, signer, tmp_path):
    _, paths = copy_of(published, tmp_path)
    key = paths["parquet"].parent / "coordinator.pub.json"
    runner = CliRunner()
    for fmt in FORMATS:
        result = runner.invoke(limits_app, ["verify", str(paths[fmt]), "--key", str(key)])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"OK: 30 limits, signed by coordinator {signer.fingerprint[:16]}"
    text = paths["csv"].read_text().splitlines(keepends=True)
    text[2] = text[2].replace('"scorecard-lr-v1"', '"scorecard-lr-v2"')
    paths["csv"].write_text("".join(text))
    result = runner.invoke(limits_app, ["verify", str(paths["csv"]), "--key", str(key)])
    assert result.exit_code == 1 and "row 2 (line 3" in result.output and "cell 'model_version' changed" in result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    moved = tmp_path / "elsewhere.sig.json"
    paths["signature"].rename(moved)
    result = runner.invoke(limits_app, ["verify", str(paths["parquet"]), "--key", str(key)])
    assert result.exit_code == 1 and "signature file not found" in result.output
    result = runner.invoke(limits_app, ["verify", str(paths["parquet"]), "--key", str(key), "--signature", str(moved)])
    assert result.exit_code == 0, result.output
    result = runner.invoke(limits_app, ["verify", str(paths["parquet"]), "--key", str(tmp_path / "nokey.json")])
    assert result.exit_code == 1 and "FAILED" in result.output and "Traceback" not in result.output
    assert PublicIdentity.load(key) == signer.public
