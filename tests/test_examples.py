"""Examples and notebooks run as they are shipped."""

import json
import runpy
from pathlib import Path

import matplotlib

ROOT = Path(__file__).resolve().parent.parent


def test_example_script_runs(capsys):
    auc = runpy.run_path(str(ROOT / "examples" / "synthetic_population.py"))["main"](rows=5000, seed=1)
    assert auc["all"] > auc["bank"]
    assert "AUC all" in capsys.readouterr().out


def test_notebook_code_cells_run(monkeypatch):
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(plt, "show", lambda *a, **k: shown.append(plt.gcf()))
    nb = json.loads((ROOT / "notebooks" / "01_synthetic_data.ipynb").read_text())
    namespace: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "notebook", "exec"), namespace)
    assert namespace["auc"]["all"] > namespace["auc"]["bank"]
    assert len({id(f) for f in shown}) == 3 and all(fig.axes[0].has_data() for fig in shown)
    plt.close("all")
