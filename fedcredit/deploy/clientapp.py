"""``flwr-clientapp`` for fedcredit's SuperNodes: Flower's own ClientApp runner, started without the SuperNode CLI.

Flower 1.41's SuperExec starts ``flwr-clientapp`` (from PATH) once per message. Its entry
point lives in ``flwr.supernode.cli``, whose package ``__init__`` imports the whole
SuperNode (object store, SQL, gRPC servicers): about 1.5 s of imports per message on this
machine, against about 0.9 s for what running a ClientApp needs. ``fedcredit node start``
puts a ``flwr-clientapp`` shim first on the SuperNode's PATH that runs this module, which
loads Flower's ``flwr_clientapp.py`` by file (skipping that package ``__init__``) and calls
Flower's ``flwr_clientapp()`` unchanged. On any other flwr version, or when the file is
not where it was, it runs Flower's entry point as is.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

NAME = "flwr.supernode.cli.flwr_clientapp"


def _lean_entry():
    """Flower's ``flwr_clientapp`` function, imported without ``flwr.supernode.cli.__init__`` (flwr 1.41 only)."""
    import flwr
    from flwr.supercore.version import package_version

    path = Path(flwr.__file__).parent / "supernode" / "cli" / "flwr_clientapp.py"
    if not package_version.startswith("1.41.") or not path.exists():
        return None
    spec = importlib.util.spec_from_file_location(NAME, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, "flwr_clientapp", None)


def main() -> None:
    sys.argv[0] = "flwr-clientapp"
    entry = _lean_entry()
    if entry is None:
        from flwr.supernode.cli import flwr_clientapp as entry
    entry()


def write_shim(folder: Path) -> Path:
    """An executable ``flwr-clientapp`` in ``folder`` that runs this module with this Python."""
    folder.mkdir(parents=True, exist_ok=True)
    shim = folder / "flwr-clientapp"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} -m fedcredit.deploy.clientapp \"$@\"\n")
    shim.chmod(0o755)
    return shim


if __name__ == "__main__":
    main()
