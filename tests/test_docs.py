"""The documents that users read first stay true to the code."""

import re
from pathlib import Path

from fedcredit.data.schema import SCHEMAS

ROOT = Path(__file__).resolve().parent.parent


def test_every_declared_column_is_documented():
    text = (ROOT / "docs" / "data.md").read_text()
    for role, schema in SCHEMAS.items():
        assert f"### `{role}`" in text
        for col in schema.columns:
            assert f"| `{col.name}` |" in text, f"{role}.{col.name} missing from docs/data.md"


def test_readme_opens_with_two_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```(?:bash)?\n(.*?)```", readme, re.S)
    assert block and readme.index("```") < 40, "README must open with the command block"
    commands = [line for line in block.group(1).splitlines() if line.strip()]
    assert len(commands) == 2
    assert commands[0].rstrip().endswith("fedcredit demo")
    assert "pytest" in commands[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci.splitlines()


def test_every_protocol_message_kind_has_a_leakage_row():
    import importlib
    import pkgutil

    import fedcredit.protocols as protocols

    text = (ROOT / "docs" / "leakage.md").read_text()
    kinds = set()
    for info in pkgutil.iter_modules(protocols.__path__):
        module = importlib.import_module(f"fedcredit.protocols.{info.name}")
        kinds |= set(getattr(module, "KINDS", ()))
    assert "psi.blind" in kinds
    missing = [k for k in sorted(kinds) if f"| `{k}`" not in text]
    assert not missing, f"docs/leakage.md lacks rows for {missing}"


def _resolves(dotted: str) -> bool:
    """``fedcredit.x.y.Name``: the longest importable module prefix, then attributes."""
    import importlib

    parts = dotted.split(".")
    for k in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ImportError:
            continue
        for attr in parts[k:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


def test_module_paths_in_the_docs_exist():
    """Every ``fedcredit/.../x.py`` or ``fedcredit/dir/`` path and ``fedcredit.x.y`` name the README and docs/ mention is real."""
    texts = {p: p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]}
    missing = []
    for path, text in texts.items():
        for rel in set(re.findall(r"\b(fedcredit(?:_netlab)?/(?:[\w/]*\.py|(?:\w+/)+)(?=[`\s),.]))", text)):
            if not (ROOT / rel).exists():
                missing.append(f"{path.name}: {rel}")
        for dotted in set(re.findall(r"`(fedcredit(?:_netlab)?(?:\.\w+)+)", text)):
            if not _resolves(dotted):
                missing.append(f"{path.name}: {dotted}")
    assert not missing, missing
