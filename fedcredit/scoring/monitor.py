"""Monitoring: a publication compared with the previous one — early warnings per enterprise, and drift.

Post-loan monitoring (docs/monitoring.md) re-rates the same enterprises as their data
changes. Given two signed publications of limits (OLD, the previous one, and NEW), this
module verifies both signatures (and, when NEW names its predecessor, that OLD is it),
then over the enterprises in both computes

* the **score PSI** (OLD's score distribution as the reference),
* the **grade migration matrix** (old grade × new grade counts, grades best first),
* a **warning** per enterprise: red (the grade falls ``red_grade_drop`` or more, into the
  last grade, or the new PD exceeds ``red_pd``), amber (it falls ``amber_grade_drop`` or
  more), green — with reason codes naming the rules that fired and NEW's reason codes,

and reads the per-feature CSI that each node computed at home (NEW's ``metrics.json``:
only the index left the node). Thresholds come from the limit policy's ``[monitoring]``
table. Nothing here knows about protocols: it reads published files only.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from fedcredit.common.atomic import atomic_write_bytes
from fedcredit.common.errors import FedCreditError
from fedcredit.data.io import write_table
from fedcredit.scoring.policy import LimitPolicy, MonitoringPolicy, PolicyError
from fedcredit.scoring.publish import VerifyReport, verify_limits
from fedcredit.scoring.stability import population_stability_index

WARNINGS = ("red", "amber", "green")
COLUMNS = ("uscc", "old_grade", "new_grade", "warning", "reasons")


class MonitorError(FedCreditError):
    """Two publications cannot be compared as given; the message names the folder or file and what was expected."""


@dataclass
class Publication:
    """One verified publication: its rows, what its signature proved, and the run folder it came from."""

    folder: Path
    limits: pd.DataFrame
    report: VerifyReport

    @property
    def chain(self) -> dict:
        """The signed publication metadata (model, version, previous), or {} for a publication without it."""
        meta = self.report.metadata or {}
        return meta.get("publication") if isinstance(meta.get("publication"), dict) else {}


def load_publication(folder, which: str) -> Publication:
    """``folder``'s limits, verified against its signature and its coordinator's public key (``which``: OLD/NEW)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MonitorError(f"{which} {folder}: no such folder; expected a scoring or training run's folder "
                           "(limits.parquet, limits.sig.json, keys/coordinator.pub.json)")
    needed = [folder / "limits.parquet", folder / "limits.sig.json", folder / "keys" / "coordinator.pub.json"]
    missing = [str(p.relative_to(folder)) for p in needed if not p.is_file()]
    if missing:
        raise MonitorError(f"{which} {folder}: {', '.join(missing)} missing; expected a run folder with signed limits")
    report = verify_limits(needed[0], needed[2])  # a VerificationError names the file and the changed cells
    limits = pd.read_parquet(needed[0], columns=["uscc", "score", "grade", "pd", "reason_codes", "model_version"])
    return Publication(folder, limits, report)


def check_chain(old: Publication, new: Publication) -> str:
    """Refuse NEW when its signed metadata names a previous publication other than OLD; otherwise say what was
    checked."""
    previous = new.chain.get("previous")
    if not isinstance(previous, dict) or not previous.get("digest"):
        return (f"{new.folder}: its signature names no previous publication, so OLD was not checked to be its "
                "predecessor")
    if previous["digest"] != old.report.digest:
        raise MonitorError(f"{new.folder} follows the publication with rows digest {str(previous['digest'])[:16]}… "
                           f"(run {previous.get('run_id')!r}, version {previous.get('version')!r}), but {old.folder} "
                           f"has digest {old.report.digest[:16]}…: OLD is not NEW's previous publication")
    return f"{new.folder} follows {old.folder} (version {previous.get('version')!r}, rows digest verified)"


def early_warnings(old: pd.DataFrame, new: pd.DataFrame, grades: tuple[str, ...], rules: MonitoringPolicy) -> pd.DataFrame:
    """One row per enterprise in both (``old`` and ``new`` joined on uscc): old and new grade, warning, reasons."""
    both = old.merge(new, on="uscc", suffixes=("_old", "_new")).sort_values("uscc", ignore_index=True)
    order = {g: i for i, g in enumerate(grades)}
    for side in ("old", "new"):
        unknown = sorted(set(both[f"grade_{side}"]) - set(order))
        if unknown:
            raise MonitorError(f"the {side.upper()} publication has grade(s) {unknown} that the policy's bands "
                               f"({', '.join(grades)}) do not define: compare under the policy that graded it (--policy)")
    drop = both["grade_new"].map(order).to_numpy() - both["grade_old"].map(order).to_numpy()
    last = (both["grade_new"] == grades[-1]).to_numpy() & (both["grade_old"] != grades[-1]).to_numpy()
    high_pd = both["pd_new"].to_numpy() > rules.red_pd
    red = (drop >= rules.red_grade_drop) | last | high_pd
    amber = ~red & (drop >= rules.amber_grade_drop)
    warning = np.where(red, "red", np.where(amber, "amber", "green"))
    reasons = []
    for i, codes in enumerate(both["reason_codes_new"]):
        fired = ([f"grade_down_{drop[i]}"] if drop[i] >= rules.amber_grade_drop else []) + \
                (["last_grade"] if last[i] else []) + ([f"pd_over_{rules.red_pd:g}"] if high_pd[i] else [])
        published = [c for c in str(codes or "").split(";") if c] if fired else []
        reasons.append(";".join(fired + published))
    return pd.DataFrame({"uscc": both["uscc"].astype(str), "old_grade": both["grade_old"].astype(str),
                         "new_grade": both["grade_new"].astype(str), "warning": warning, "reasons": reasons,
                         "score_old": both["score_old"], "score_new": both["score_new"]})


def migration_matrix(warnings: pd.DataFrame, grades: tuple[str, ...]) -> pd.DataFrame:
    """Counts of enterprises per (old grade, new grade), every grade of the bands on both axes, best first."""
    table = pd.crosstab(pd.Categorical(warnings["old_grade"], grades), pd.Categorical(warnings["new_grade"], grades),
                        dropna=False)
    table.index.name, table.columns.name = "old grade", "new grade"
    return table.reindex(index=list(grades), columns=list(grades), fill_value=0).astype(int)


def feature_stability(folder: Path, rules: MonitoringPolicy) -> tuple[dict, list[str]]:
    """NEW's per-feature CSI as its nodes reported it (``metrics.json`` "csi"), each with a verdict; and notes."""
    path = folder / "metrics.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}, [f"{path}: missing, so no feature CSI"]
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise MonitorError(f"{path}: unreadable ({exc})") from None
    csi = doc.get("csi") if isinstance(doc, dict) else None
    notes = [f"{role}: {note}" for role, note in sorted((doc.get("csi_notes") or {}).items())]
    if csi is None:
        return {}, notes + [f"{path}: no per-feature CSI (a training run, or a scoring run from before monitoring)"]
    if not isinstance(csi, dict) or not all(isinstance(v, dict) for v in csi.values()):
        raise MonitorError(f"{path}: csi must map each node to {{feature label: value}}")
    out = {}
    for role, values in csi.items():
        try:
            out[role] = {label: {"csi": float(v), "verdict": rules.verdict(float(v), "csi")}
                         for label, v in sorted(values.items())}
        except (TypeError, ValueError):
            raise MonitorError(f"{path}: csi of {role} must give one number per feature label") from None
    return out, notes + ["metrics.json is not signed: the CSI is as the coordinator recorded it"]


def monitor(old_dir, new_dir, out_dir, policy: LimitPolicy | None = None) -> dict:
    """Compare NEW's publication with OLD's; write ``warnings.parquet``, ``monitoring.json`` and
    ``monitoring.html`` into ``out_dir``; return the summary (the content of monitoring.json)."""
    from fedcredit.scoring.monitor_page import render_monitoring

    policy = policy or LimitPolicy()
    if not isinstance(policy, LimitPolicy):
        raise PolicyError(f"policy must be a LimitPolicy, got {type(policy).__name__}")
    old, new = load_publication(old_dir, "OLD"), load_publication(new_dir, "NEW")
    notes = [check_chain(old, new)]
    rules, grades = policy.monitoring, tuple(policy.bands.grades)
    warnings = early_warnings(old.limits, new.limits, grades, rules)
    if warnings.empty:
        raise MonitorError(f"{old.folder} and {new.folder} have no enterprise in common: nothing to compare")
    only_old = sorted(set(old.limits["uscc"]) - set(new.limits["uscc"]))
    only_new = sorted(set(new.limits["uscc"]) - set(old.limits["uscc"]))
    psi = population_stability_index(warnings["score_old"], warnings["score_new"])
    csi, csi_notes = feature_stability(new.folder, rules)
    matrix = migration_matrix(warnings, grades)
    summary = {
        "old": _describe(old), "new": _describe(new), "policy": policy.source,
        "thresholds": {k: getattr(rules, k) for k in rules.__dataclass_fields__},
        "enterprises": {"both": len(warnings), "only_old": len(only_old), "only_new": len(only_new)},
        "only_old": only_old, "only_new": only_new,
        "warnings": {w: int((warnings["warning"] == w).sum()) for w in WARNINGS},
        "psi": {"value": round(psi, 6), "verdict": rules.verdict(psi, "psi")},
        "migration": {"grades": list(grades), "counts": matrix.to_numpy().tolist()},
        "csi": csi, "notes": notes + csi_notes,
    }
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = warnings[list(COLUMNS)]
    write_table(pa.Table.from_pandas(rows, preserve_index=False), out / "warnings.parquet", "parquet")
    atomic_write_bytes(out / "monitoring.json", (json.dumps(summary, indent=2) + "\n").encode())
    render_monitoring(summary, matrix, rows, out / "monitoring.html")
    return summary


def feature_name(role: str, label: str) -> str:
    """A node feature as pages and the terminal show it: ``bank: max_dpd_24m``, or ``tax f3`` for a private label."""
    return label if label.startswith(f"{role} ") else f"{role}: {label}"


def _describe(pub: Publication) -> dict:
    """What the summary says of one publication: folder, rows, signer, digest, model and chain metadata."""
    return {"folder": str(pub.folder), "rows": pub.report.rows, "signer": pub.report.fingerprint,
            "digest": pub.report.digest, "model_version": pub.report.model_version, "publication": pub.chain or None}
