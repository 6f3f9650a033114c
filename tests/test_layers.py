"""The layer rules of ../shared/DESIGN.md, checked on every module's imports (read with ``ast``, nothing run).

One table says what each part of the product may import; the network lab, Flower and raw
gmpy2 each have their own row. An import inside a function counts like one at the top: a
lazy import is still a dependency. The checker is tested on a small planted tree too, so
this test can fail (and shows how a broken rule reads).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Who may import what, top of the stack first. A module belongs to the longest prefix listed;
# it may always import inside its own part and the package root (``fedcredit``: the version).
#
#   part                  may import (fedcredit parts)
MAY_IMPORT: dict[str, set[str]] = {
    "fedcredit.cli":       {"fedcredit.jobs", "fedcredit.flower", "fedcredit.deploy", "fedcredit.serving", "fedcredit.protocols",
                            "fedcredit.governance", "fedcredit.audit", "fedcredit.scoring", "fedcredit.data", "fedcredit.crypto",
                            "fedcredit.models", "fedcredit.common"},
    "fedcredit.api":       {"fedcredit.jobs", "fedcredit.protocols", "fedcredit.governance", "fedcredit.audit", "fedcredit.scoring",
                            "fedcredit.data", "fedcredit.crypto", "fedcredit.models", "fedcredit.common"},
    "fedcredit.local":     {"fedcredit.jobs"},  # the old name of the in-process engine
    "fedcredit.jobs":      {"fedcredit.flower", "fedcredit.deploy", "fedcredit.protocols", "fedcredit.governance",
                            "fedcredit.audit",
                            "fedcredit.scoring", "fedcredit.data", "fedcredit.crypto", "fedcredit.models",
                            "fedcredit.common"},
    "fedcredit.flower":    {"fedcredit.deploy", "fedcredit.serving", "fedcredit.node", "fedcredit.node.channel", "fedcredit.protocols", "fedcredit.audit",
                            "fedcredit.scoring", "fedcredit.crypto", "fedcredit.common"},
    "fedcredit.node.__main__": {"fedcredit.node", "fedcredit.flower", "fedcredit.common"},  # the service's entry: wires in Flower's tasks
    "fedcredit.node":      {"fedcredit.node.channel", "fedcredit.protocols", "fedcredit.crypto", "fedcredit.common"},  # the node service
    "fedcredit.node.channel": {"fedcredit.common"},  # stdlib only: the relay ClientApp and deploy use it
    "fedcredit.deploy.clientapp": {"fedcredit.deploy", "fedcredit.flower", "fedcredit.node.channel",
                                   "fedcredit.governance", "fedcredit.common"},  # the node's
    # flwr-clientapp launcher: runs a task itself (never the app bundle's code) when the node service cannot
    "fedcredit.deploy":    {"fedcredit.node.channel", "fedcredit.governance", "fedcredit.common"},
    "fedcredit.protocols": {"fedcredit.governance", "fedcredit.audit", "fedcredit.scoring", "fedcredit.data", "fedcredit.crypto",
                            "fedcredit.models", "fedcredit.common"},
    "fedcredit.audit":     {"fedcredit.crypto", "fedcredit.common"},
    "fedcredit.serving":   {"fedcredit.data", "fedcredit.common"},  # the query endpoint: HTTP, tokens; no protocol
    "fedcredit.governance": {"fedcredit.common"},  # a node's own rules: policy, budget, consent (no protocol)
    "fedcredit.scoring":   {"fedcredit.data", "fedcredit.crypto", "fedcredit.common"},
    "fedcredit.models":    {"fedcredit.scoring", "fedcredit.common"},
    "fedcredit.data":      {"fedcredit.common"},
    "fedcredit.crypto":    {"fedcredit.common"},
    "fedcredit.common":    set(),
    "fedcredit":           set(),  # the package root: its version only
}

# The engines talk to the protocols through their party interface only: the names
# ``fedcredit/protocols/__init__.py`` exports (never a protocol's module).
INTERFACE_ONLY = {"fedcredit.flower": "fedcredit.protocols", "fedcredit.node": "fedcredit.protocols"}

# Outside libraries and the lab: which parts of the product may import them.
#   library              allowed in                                   why
RESTRICTED = {
    "flwr":             ({"fedcredit.flower", "fedcredit.deploy"}, "Flower is a transport: engines and deployment only"),
    "gmpy2":            ({"fedcredit.crypto"}, "raw gmpy2 stays behind crypto's small interface"),
    "fedcredit_netlab": (set(), "the network lab is for tests and benchmarks, never the product"),
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(path: Path, name: str) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) for every import in the file, relative ones resolved."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.append((node.lineno, base, [a.name for a in node.names]))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("fedcredit_netlab"):
            found.append((node.lineno, node.value.split()[0], []))  # e.g. ``python -m fedcredit_netlab.x``
    return found


def part_of(name: str) -> str | None:
    """The longest MAY_IMPORT prefix ``name`` falls under (None: not a fedcredit module)."""
    best = None
    for part in MAY_IMPORT:
        inside = name == part or (part != "fedcredit" and name.startswith(part + "."))  # the root is one module
        if inside and (best is None or len(part) > len(best)):
            best = part
    return best


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def violations(root: Path) -> list[str]:
    """Every broken rule under ``root`` (a folder holding the ``fedcredit`` package), one line each."""
    found = []
    for path in sorted((root / "fedcredit").rglob("*.py")):
        name = module_name(path, root)
        part = part_of(name)
        where = f"{path.relative_to(root)}"
        if part is None:
            found.append(f"{where}: module {name} belongs to no part of the layer table (add it to MAY_IMPORT)")
            continue
        for line, target, names in imports(path, name):
            for lib, (allowed, why) in RESTRICTED.items():
                if _under(target, lib) and not any(_under(part, a) for a in allowed):
                    found.append(f"{where}:{line}: {part} imports {target} — {why}")
            if not _under(target, "fedcredit"):
                continue
            if target == "fedcredit":  # ``from fedcredit import x``: x is a part (or the version)
                targets = [f"fedcredit.{n}" if part_of(f"fedcredit.{n}") not in (None, "fedcredit") else "fedcredit"
                           for n in names]
            else:
                targets = [target]
            for t in targets:
                other = part_of(t)
                if other in (part, "fedcredit") or other in MAY_IMPORT[part]:
                    interface = INTERFACE_ONLY.get(part)
                    if interface and other == interface and t != interface:
                        found.append(f"{where}:{line}: {part} imports {t} — only the party interface "
                                     f"({interface}) may be used by {part}")
                    continue
                found.append(f"{where}:{line}: {part} imports {t} — {part} may import only "
                             f"{', '.join(sorted(MAY_IMPORT[part])) or 'nothing of fedcredit'}")
    return found


def test_the_product_keeps_its_layers():
    found = violations(ROOT)
    assert not found, "layer rules broken:\n" + "\n".join(found)


def test_the_network_lab_stays_outside_the_product():
    lab = ROOT / "fedcredit_netlab"
    assert lab.is_dir() and not (ROOT / "fedcredit" / "netlab").exists()
    assert {p.name for p in lab.glob("*.py")} >= {"namespaces.py", "capture.py", "delay_relay.py"}


def test_no_protocol_module_is_large():
    """Small modules: a party per module; nothing under protocols/ much over 500 lines."""
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in (ROOT / "fedcredit/protocols").rglob("*.py")}
    assert {k: v for k, v in sizes.items() if v > 520} == {}


def _plant(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_the_checker_finds_each_kind_of_broken_rule(tmp_path):
    planted = {
        "fedcredit/__init__.py": "",
        "fedcredit/protocols/__init__.py": "from fedcredit.protocols.party import Party\n",
        "fedcredit/protocols/party.py": "import flwr\nfrom ..flower import codec\n",
        "fedcredit/crypto/keys.py": "def f():\n    from fedcredit.protocols import party\n",
        "fedcredit/audit/log.py": "from fedcredit import cli\n",
        "fedcredit/flower/codec.py": "from fedcredit.protocols.party import Party\nfrom fedcredit.protocols import Party\n",
        "fedcredit/data/io.py": "import gmpy2\n",
        "fedcredit/jobs/run.py": "from fedcredit_netlab import namespaces\nCMD = 'fedcredit_netlab.delay_relay --x'\n",
        "fedcredit/newthing/a.py": "x = 1\n",
    }
    found = violations(_plant(tmp_path, planted))
    text = "\n".join(found)
    assert "fedcredit/protocols/party.py:1: fedcredit.protocols imports flwr — Flower is a transport" in text
    assert "fedcredit/protocols/party.py:2: fedcredit.protocols imports fedcredit.flower" in text  # relative import
    assert "fedcredit/crypto/keys.py:2: fedcredit.crypto imports fedcredit.protocols" in text  # lazy import
    assert "fedcredit/audit/log.py:1: fedcredit.audit imports fedcredit.cli" in text
    assert "fedcredit/flower/codec.py:1: fedcredit.flower imports fedcredit.protocols.party — only the party interface" in text
    assert "fedcredit/flower/codec.py:2" not in text  # the interface itself is fine
    assert "fedcredit/data/io.py:1: fedcredit.data imports gmpy2 — raw gmpy2 stays behind crypto" in text
    assert "fedcredit/jobs/run.py:1: fedcredit.jobs imports fedcredit_netlab — the network lab" in text
    assert "fedcredit/jobs/run.py:2: fedcredit.jobs imports fedcredit_netlab.delay_relay" in text
    assert "module fedcredit.newthing.a belongs to no part" in text
    assert len(found) == 9, text
