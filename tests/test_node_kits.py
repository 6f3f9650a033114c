"""The deployment kits in nodes/<role>/: templates parse, scripts are valid POSIX sh, and commands come out right.

`node start --config` and `coordinator start --config` are checked with ``--dry-run``
(which prints the Flower command and starts nothing); start.sh runs against a fake
``fedcredit`` that records its arguments.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedcredit.cli import app
from fedcredit.deploy import kitconfig
from fedcredit.common.errors import FedCreditError

ROOT = Path(__file__).resolve().parent.parent
NODE_ROLES = ("bank", "tax", "utilities")
HOST_KITS = ("court",)  # further data holders with their own columns (docs/add-a-data-holder.md)
BANK_KITS = ("bank-b",)  # a second bank on the same federation (docs/add-a-bank.md)
KITS = NODE_ROLES + HOST_KITS + BANK_KITS + ("coordinator",)
runner = CliRunner()


def _config(role: str) -> str:
    return "coordinator.toml" if role == "coordinator" else "node.toml"


@pytest.mark.parametrize("role", KITS)
def test_each_kit_has_a_config_a_posix_start_script_and_a_readme(role):
    kit = ROOT / "nodes" / role
    script = kit / "start.sh"
    text = script.read_text()
    assert text.startswith("#!/bin/sh\n") and "\nset -eu\n" in text
    assert os.access(script, os.X_OK), "start.sh must be executable"
    for shell in ("sh", "dash"):
        if shutil.which(shell):
            res = subprocess.run([shell, "-n", str(script)], capture_output=True, text=True)
            assert res.returncode == 0, res.stderr
    assert "--config \"$config\"" in text and _config(role) in text
    readme = (kit / "README.md").read_text()
    assert "./start.sh" in readme and _config(role) in readme and "0600" in readme


@pytest.mark.parametrize("role", NODE_ROLES + HOST_KITS + BANK_KITS)
def test_node_templates_parse_and_name_their_role(role):
    node, columns = kitconfig.load_node_config(ROOT / "nodes" / role / "node.toml")
    assert node["role"] == role
    assert node["certs"] == ROOT / "nodes" / role / "certs"  # relative to the file
    assert {"superlink", "data", "work", "out"} <= set(node)
    assert ("label" in columns) == (role in ("bank", *BANK_KITS))  # every bank holds a label, no host does


def test_coordinator_template_parses():
    cfg = kitconfig.load_coordinator_config(ROOT / "nodes" / "coordinator" / "coordinator.toml")
    assert cfg["host"] == "127.0.0.1" and cfg["nodes"] == list(NODE_ROLES) and isinstance(cfg["port"], int)


@pytest.fixture
def kit(tmp_path):
    """The bank kit copied to a 'machine': its certs (ca.pem, its own key 0600) and a data file."""
    from fedcredit.deploy.certs import make_certs

    from fedcredit.flower.trust import make_key

    make_certs(tmp_path / "made", "127.0.0.1", list(NODE_ROLES))
    make_key(tmp_path / "made" / "submitters", "operator")
    kit = tmp_path / "bank-kit"
    shutil.copytree(ROOT / "nodes" / "bank", kit)
    (kit / "certs" / "nodes").mkdir(parents=True)
    shutil.copy(tmp_path / "made" / "ca.pem", kit / "certs" / "ca.pem")
    shutil.copy(tmp_path / "made" / "nodes" / "bank.key", kit / "certs" / "nodes" / "bank.key")
    (kit / "certs" / "nodes" / "bank.key").chmod(0o600)
    shutil.copytree(tmp_path / "made" / "submitters", kit / "certs" / "submitters")  # whose jobs the node takes
    (tmp_path / "bank.parquet").write_bytes(b"PAR1")
    text = (kit / "node.toml").read_text()
    text = text.replace("/srv/fedcredit/bank.parquet", str(tmp_path / "bank.parquet"))
    text = text.replace("/var/lib/fedcredit", str(tmp_path / "var"))
    text = text.replace("# features = []", 'features = ["balance_avg_12m", "dpd_max_12m"]')
    (kit / "node.toml").write_text(text)
    return kit


def _dry_run(*args: str) -> list[str]:
    res = runner.invoke(app, [*args, "--dry-run"], env={"COLUMNS": "1000"})
    assert res.exit_code == 0, res.output
    service, supernode = res.output.strip().splitlines()[:2]
    # the node service comes first, configured by the same node-config string as the SuperNode
    service = shlex.split(service)
    assert service[1:3] == ["-m", "fedcredit.node"] and service[-1] == "&", service
    assert service[service.index("--node-config") + 1] == shlex.split(supernode)[shlex.split(supernode).index(
        "--node-config") + 1]
    return shlex.split(supernode)


def _node_config(cmd: list[str]) -> dict[str, str]:
    raw = cmd[cmd.index("--node-config") + 1]
    return dict(item.split("=", 1) for item in shlex.split(raw))


def test_node_start_config_builds_the_supernode_command(kit, tmp_path):
    cmd = _dry_run("node", "start", "--config", str(kit / "node.toml"))
    assert cmd[0] == "FEDCREDIT_IDLE_POLL=0.1"
    assert cmd[cmd.index("--superlink") + 1] == "127.0.0.1:9092"
    assert cmd[cmd.index("--root-certificates") + 1] == str(kit / "certs" / "ca.pem")
    assert cmd[cmd.index("--auth-supernode-private-key") + 1] == str(kit / "certs" / "nodes" / "bank.key")
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    cfg = _node_config(cmd)
    assert cfg == {"role": "bank", "data": str(tmp_path / "bank.parquet"), "work-dir": str(tmp_path / "var" / "bank" / "state"),
                   "out-dir": str(tmp_path / "var" / "bank" / "out"), "id-column": "uscc", "id-kind": "uscc",
                   "label": "default_12m", "features": "balance_avg_12m,dpd_max_12m", "policy": "default",
                   "submitters": str(kit / "certs" / "submitters" / "operator.pub")}

    # options given on the command line override the file
    cmd = _dry_run("node", "start", "--config", str(kit / "node.toml"), "--superlink", "coord.example:9443",
                   "--port", "9555")
    assert cmd[cmd.index("--superlink") + 1] == "coord.example:9443" and cmd[cmd.index("--port") + 1] == "9555"


def test_node_start_without_config_still_works_and_names_what_is_missing(kit, tmp_path):
    cmd = _dry_run("node", "start", "--role", "bank", "--data", str(tmp_path / "bank.parquet"), "--superlink", "h:1",
                   "--certs", str(kit / "certs"), "--work", str(tmp_path / "w"))
    assert _node_config(cmd)["role"] == "bank" and "id-column" not in _node_config(cmd)
    res = runner.invoke(app, ["node", "start", "--role", "bank", "--superlink", "h:1"])
    assert res.exit_code == 1 and "--data is required (or use --config FILE)" in res.output
    (kit / "partial.toml").write_text('[node]\nrole = "bank"\n')
    res = runner.invoke(app, ["node", "start", "--config", str(kit / "partial.toml")], env={"COLUMNS": "1000"})
    assert res.exit_code == 1 and f"--data is required or 'data' in {kit / 'partial.toml'}" in res.output


@pytest.mark.parametrize("edit,expect", [
    (lambda t: t.replace("idle_poll = 0.1", 'idle_poll = "fast"'), r"\[node\] idle_poll must be float"),
    (lambda t: t + "\n[extra]\n", r"unknown section\(s\) \['extra'\]"),
    (lambda t: t.replace("id_type =", "id_kind ="), r"unknown key\(s\) \['id_kind'\] in \[columns\]"),
    (lambda t: t.replace('features = ["balance_avg_12m"', 'features = ["a,b"'), r"\[columns\] features must be a list"),
    (lambda t: t.replace("[columns]", '[columns]\nlayout = "free"'), r"\[columns\] layout: expected"),
    (lambda t: t.replace("[node]", '[node]\nray_address = "head-node"'), r"\[node\] ray_address: a Ray address must be"),
    (lambda t: t.replace("[node]", "[node]\nray_private_keys = true"), r"\[node\] ray_private_keys is set without ray_address"),
])
def test_a_bad_node_config_names_file_and_key(kit, edit, expect):
    path = kit / "node.toml"
    path.write_text(edit(path.read_text()))
    with pytest.raises(FedCreditError, match=expect) as err:
        kitconfig.load_node_config(path)
    assert str(path) in str(err.value)


def test_ray_address_reaches_the_node_service(kit):
    """[node] ray_address (the node's crypto worker pool on its Ray cluster, docs/scale.md) becomes node config."""
    path = kit / "node.toml"
    path.write_text(path.read_text().replace("[node]", '[node]\nray_address = "10.0.0.5:6379"\nray_private_keys = false'))
    cfg = _node_config(_dry_run("node", "start", "--config", str(path)))
    assert cfg["ray-address"] == "10.0.0.5:6379" and cfg["ray-private-keys"] == "false"


def test_node_start_refuses_a_key_others_can_read(kit):
    (kit / "certs" / "nodes" / "bank.key").chmod(0o644)
    res = runner.invoke(app, ["node", "start", "--config", str(kit / "node.toml"), "--dry-run"], env={"COLUMNS": "1000"})
    assert res.exit_code == 1 and "readable by others (mode 0644); run: chmod 600" in res.output
    (kit / "certs" / "nodes" / "bank.key").unlink()
    res = runner.invoke(app, ["node", "start", "--config", str(kit / "node.toml"), "--dry-run"], env={"COLUMNS": "1000"})
    assert res.exit_code == 1 and "bank.key is missing" in res.output


def test_coordinator_start_config_builds_the_superlink_command(tmp_path):
    from fedcredit.deploy.certs import make_certs

    kit = tmp_path / "coordinator-kit"
    shutil.copytree(ROOT / "nodes" / "coordinator", kit)
    make_certs(kit / "certs", "127.0.0.1", list(NODE_ROLES))
    cfg = kit / "coordinator.toml"
    cfg.write_text(cfg.read_text().replace("/var/lib/fedcredit/coordinator", str(tmp_path / "state")))
    res = runner.invoke(app, ["coordinator", "start", "--config", str(cfg), "--port", "9777", "--dry-run"],
                        env={"COLUMNS": "1000"})
    assert res.exit_code == 0, res.output
    cmd = shlex.split(res.output.splitlines()[0])
    assert cmd[cmd.index("--ssl-keyfile") + 1] == str(kit / "certs" / "superlink.key")
    assert cmd[cmd.index("--database") + 1] == str(tmp_path / "state" / "superlink.db")
    assert cmd[cmd.index("--port") + 1] == "9777" and cmd[cmd.index("--host") + 1] == "127.0.0.1"
    assert "--enable-supernode-auth" in cmd and "--insecure" not in cmd
    assert "registers: bank, tax, utilities" in res.output


@pytest.fixture
def fake_fedcredit(tmp_path):
    """A stand-in for the fedcredit command that writes its arguments, one a line."""
    log = tmp_path / "args.txt"
    fake = tmp_path / "fake-fedcredit"
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do printf "%s\\n" "$a"; done > {shlex.quote(str(log))}\n'
                    f'umask > {shlex.quote(str(log))}.umask\n')
    fake.chmod(0o755)
    return fake, log


def test_start_sh_runs_node_start_with_its_config(kit, fake_fedcredit):
    fake, log = fake_fedcredit
    env = {**os.environ, "FEDCREDIT": str(fake)}
    res = subprocess.run(["sh", str(kit / "start.sh"), "--idle-poll", "0.5"], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines() == ["node", "start", "--config", str(kit / "node.toml"), "--idle-poll", "0.5"]
    assert Path(f"{log}.umask").read_text().strip() == "0077"

    other = kit / "other.toml"
    other.write_text((kit / "node.toml").read_text().replace('role = "bank"', 'role = "tax"'))
    res = subprocess.run(["sh", str(kit / "start.sh"), str(other)], env=env, capture_output=True, text=True)
    assert res.returncode == 1 and 'does not say role = "bank"' in res.stderr
    res = subprocess.run(["sh", str(kit / "start.sh"), str(kit / "missing.toml")], env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "cannot read" in res.stderr
    res = subprocess.run(["sh", str(kit / "start.sh")], env={**env, "FEDCREDIT": str(kit / "nope")},
                         capture_output=True, text=True)
    assert res.returncode == 1 and "not found" in res.stderr


def test_coordinator_start_sh_runs_coordinator_start(tmp_path, fake_fedcredit):
    fake, log = fake_fedcredit
    res = subprocess.run(["sh", str(ROOT / "nodes" / "coordinator" / "start.sh")], env={**os.environ, "FEDCREDIT": str(fake)},
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines() == ["coordinator", "start", "--config",
                                            str(ROOT / "nodes" / "coordinator" / "coordinator.toml")]


def test_a_custom_layout_reaches_the_client_app(kit):
    """A node whose file has its own columns (layout = "custom") can be deployed: the node service reads the layout."""

    from fedcredit.node.config import node_from_config

    path = kit / "node.toml"
    path.write_text(path.read_text().replace("[columns]", '[columns]\nlayout = "custom"'))
    _, node_config = kitconfig.load_node_config(path)
    assert node_config["layout"] == "custom"
    node, _ = node_from_config({"role": "bank", "data": "/d.parquet", **node_config}, 1)
    assert node.layout == "custom" and node.features == ["balance_avg_12m", "dpd_max_12m"]
    standard, _ = node_from_config({"role": "tax", "data": "/d.parquet"}, 1)
    assert standard.layout == "standard"


def test_the_court_kit_declares_the_columns_of_its_synthetic_file(tmp_path):
    """The court kit's [columns] reach the node service as a custom layout that reads the court's file as
    `fedcredit synth --with-court` writes it, and match examples/job_four_nodes.toml."""

    from fedcredit.data import synth, synth_court
    from fedcredit.data.validate import load_node
    from fedcredit.node.config import node_from_config
    from fedcredit.jobs.jobfile import read_job

    node, columns = kitconfig.load_node_config(ROOT / "nodes" / "court" / "node.toml")
    assert columns == {"layout": "custom", "id-column": synth_court.ID_COLUMN, "id-kind": "uscc",
                       "extra": ",".join(synth_court.extra_declarations())}
    job = read_job(ROOT / "examples" / "job_four_nodes.toml").nodes["court"]
    assert [job["layout"], job["id_column"], job["id_type"], job["extra"]] == \
        [columns["layout"], columns["id-column"], columns["id-kind"], columns["extra"].split(",")]
    path = synth.write_nodes({"court": synth.generate(300, 2, court=True)["court"]}, tmp_path)["court"]
    config, _ = node_from_config({"role": node["role"], "data": str(path), **columns}, 1)
    data = load_node(config.data, config.schema())
    assert list(data.features.columns) == list(synth_court.COLUMNS) and data.label is None


@pytest.mark.parametrize("role", HOST_KITS)
def test_a_host_kit_start_sh_runs_its_own_role_only(role, tmp_path, fake_fedcredit):
    fake, log = fake_fedcredit
    kit = tmp_path / f"{role}-kit"
    shutil.copytree(ROOT / "nodes" / role, kit)
    env = {**os.environ, "FEDCREDIT": str(fake)}
    res = subprocess.run(["sh", str(kit / "start.sh")], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert log.read_text().splitlines() == ["node", "start", "--config", str(kit / "node.toml")]
    other = kit / "other.toml"
    other.write_text((kit / "node.toml").read_text().replace(f'role = "{role}"', 'role = "tax"'))
    res = subprocess.run(["sh", str(kit / "start.sh"), str(other)], env=env, capture_output=True, text=True)
    assert res.returncode == 1 and f'does not say role = "{role}"' in res.stderr
