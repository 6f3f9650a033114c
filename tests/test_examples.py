"""Examples and notebooks run as they are shipped."""

import runpy
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_example_script_runs(capsys):
    auc = runpy.run_path(str(ROOT / "examples" / "synthetic_population.py"))["main"](rows=5000, seed=1)
    assert auc["all"] > auc["bank"]
    assert "AUC all" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["01_synthetic_data.ipynb", "joint_modeling.ipynb"])
def test_notebooks_execute_and_are_stored_without_outputs(name, tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    path = ROOT / "notebooks" / name
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells if c.cell_type == "code"), \
        f"{name}: outputs must be stripped before committing"
    monkeypatch.setenv("MPLBACKEND", "Agg")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
