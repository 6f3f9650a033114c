"""``python -m fedcredit.node --node-config "role='tax' data=... work-dir=... out-dir=..."``: the node service.

``fedcredit node start`` runs this beside the SuperNode, with the same node config. The entry
point wires in Flower's side of the service: the Flower tasks that the node's
``flwr-clientapp`` launcher hands over run here (``fedcredit.flower.warm_task``).
"""

from __future__ import annotations

import argparse
import sys

from fedcredit.common.errors import FedCreditError
from fedcredit.node.config import parse_node_config
from fedcredit.flower import warm_task
from fedcredit.node.service import serve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fedcredit.node", description=__doc__.splitlines()[0])
    p.add_argument("--node-config", required=True, help="the SuperNode's node config (key='value' ...)")
    p.add_argument("--workers", type=int, default=None, help="crypto worker processes (default: one per core)")
    args = p.parse_args(argv)
    try:
        serve(parse_node_config(args.node_config), workers=args.workers,
              run_task=warm_task.run_task if warm_task.supported() else None)
    except FedCreditError as exc:
        print(f"fedcredit node service: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
