"""``init`` and ``doctor`` on real repos, and the second-machine key trap.

Operator stories on the unpacked upstream cluster-template snapshot (its sample is
``cluster.sample.toml``, its plugin reads local files that its ``.gitignore`` keeps out of
git) and on this project's shipped templates:

* init makes every data entry of the settings from the sample beside it, never overwrites;
* doctor names each file the plugin reads that this machine lacks, with the fix;
* a clone with committed secrets but without ``age.key``: init refuses to make a new key and
  says how to restore the old one; ``init --new-age-key`` makes one and prints what to rotate;
  configure then refuses the silent re-key until ``--rotate-age-key``;
* a post-quantum key is refused with how to make a classic one (and sops really cannot use it).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import stat
import subprocess
import tarfile
import time
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import copy_project_repo, make_age_key
from operator_repo import (
    SOPS,
    TOOLS,
    changed_paths,
    cli_env,
    clone,
    gr,
    ok,
    public_key,
    recipients,
    secret_files,
    snapshot,
)
from test_real_cluster_template import SNAPSHOT, TESTS_DIR, gitops_render

CLASSIC_KEY = re.compile(r"^AGE-SECRET-KEY-1[0-9A-Z]{58}$", re.MULTILINE)
#: what cluster-template's plugin reads from the repo root besides the data and the age key
LOCAL_FILES = ("deploy.key", "flux-webhook-token.txt", "cloudflare-tunnel.json")


@pytest.fixture
def fresh(tmp_path: Path) -> Path:
    """A fresh checkout of the upstream cluster-template: nothing created yet."""
    assert SNAPSHOT.is_file(), f"snapshot not found: {SNAPSHOT} (set GITOPS_RENDER_SHARED)"
    with tarfile.open(SNAPSHOT) as tar:
        tar.extractall(tmp_path, filter="fully_trusted")
    return tmp_path / "cluster-template"


def make_local_files(repo: Path) -> None:
    """What the repo's own `just init` (and the operator, for the tunnel) make on a machine."""
    subprocess.run(["ssh-keygen", "-t", "ed25519", "-C", "deploy-key", "-f", str(repo / "deploy.key"), "-q", "-P", ""],
                   check=True, capture_output=True, timeout=60)
    (repo / "flux-webhook-token.txt").write_text(secrets.token_hex(16) + "\n")
    (repo / "cloudflare-tunnel.json").write_text('{"AccountTag":"fake","TunnelSecret":"fake","TunnelID":"fake"}\n')


# =========================================================================== init on cluster-template


def test_init_on_a_fresh_cluster_template_checkout_makes_cluster_toml_from_its_sample(fresh: Path) -> None:
    sample = (fresh / "cluster.sample.toml").read_bytes()
    gitignore = (fresh / ".gitignore").read_text()
    res = ok(gr(fresh, "init"))
    assert "created cluster.toml from cluster.sample.toml, mode 0600" in res.stdout, res.stdout
    assert (fresh / "cluster.toml").read_bytes() == sample, "without a schema the sample is copied as it is"
    assert stat.S_IMODE((fresh / "cluster.toml").stat().st_mode) == 0o600
    assert "created age key age.key" in res.stdout, res.stdout
    key = (fresh / "age.key").read_text()
    assert CLASSIC_KEY.search(key) and "AGE-SECRET-KEY-PQ-" not in key, "init must create a classic X25519 key"
    assert stat.S_IMODE((fresh / "age.key").stat().st_mode) == 0o600
    # the repo's own .gitignore keeps /cluster.toml and /age.key (and *.key) out: nothing added twice
    added = (fresh / ".gitignore").read_text()[len(gitignore):]
    assert "cluster.toml" not in added and "age.key" not in added, added

    before = snapshot(fresh, mtimes=True)
    res = ok(gr(fresh, "init"))
    assert "kept cluster.toml" in res.stdout and "kept age.key" in res.stdout, res.stdout
    assert changed_paths(before, snapshot(fresh, mtimes=True)) == []


def test_doctor_on_cluster_template_names_each_file_the_plugin_reads_until_it_exists(fresh: Path) -> None:
    ok(gr(fresh, "init"))
    began = time.monotonic()
    res = gr(fresh, "doctor")
    assert time.monotonic() - began < 10, "doctor must stay fast (it does not render)"
    assert res.returncode == 1, res.stdout
    for name in LOCAL_FILES:
        line = rf"^\[MISSING\] file: {re.escape(name)} not found \(read by template/scripts/plugin\.py:\d+\)$"
        assert re.search(line, res.stdout, re.MULTILINE), res.stdout
    assert res.stdout.count("fix: create it: .gitignore keeps it out of git") == len(LOCAL_FILES), res.stdout
    # the example configs its tests name (public.toml ...) are not files this repo reads
    assert "public.toml" not in res.stdout and "[MISSING] data" not in res.stdout, res.stdout

    make_local_files(fresh)
    res = ok(gr(fresh, "doctor"))
    assert re.search(r"^\[    ok \] files: the \d+ file\(s\) the settings, data, templates and plugins read are "
                     r"present$", res.stdout, re.MULTILINE), res.stdout


# =========================================================================== the second machine


@pytest.mark.real_repo
def test_second_machine_without_age_key_init_refuses_a_new_key_and_configure_refuses_the_silent_rekey(
        fresh: Path, tmp_path: Path) -> None:
    """Machine one configured the repo and committed its secrets; machine two has everything but age.key."""
    first = fresh
    make_age_key(first / "age.key")
    make_local_files(first)
    shutil.copy2(first / TESTS_DIR / "valid/public.toml", first / "cluster.toml")
    res = gitops_render(first, "configure", "--no-validate", "--yes")
    assert res.returncode == 0, res.stderr
    old_pub = public_key(first / "age.key")
    committed = sorted(p.relative_to(first).as_posix() for p in first.rglob("*.sops.*")
                       if p.is_file() and p.name != ".sops.yaml" and "template" not in p.relative_to(first).parts)
    assert len(committed) >= 5, committed

    second = clone(first, tmp_path / "second")
    (second / "age.key").unlink()
    before = snapshot(second)
    res = gr(second, "init")
    assert res.returncode == 2, res.stdout + res.stderr
    err = res.stderr
    assert f"refusing to create a new age key: {len(committed)} committed secret file(s)" in err, err
    assert "and the committed creation rules (.sops.yaml) are encrypted for " + old_pub in err, err
    assert "copy age.key from the machine or backup that has it" in err and "SOPS_AGE_KEY_FILE" in err, err
    assert "the Secret flux-system/sops-age from bootstrap/sops-age.sops.yaml" in err, err
    assert "`gitops-render init --new-age-key`" in err and "nothing was written" in err, err
    assert changed_paths(before, snapshot(second)) == []
    doctor = gr(second, "doctor")
    assert doctor.returncode == 1 and "[MISSING] age key:" in doctor.stdout, doctor.stdout
    assert "fix: restore the key: copy age.key from the machine or backup" in doctor.stdout, doctor.stdout

    # the fix it names works: with the old key copied over, configure changes nothing
    restored = clone(second, tmp_path / "restored")
    shutil.copy2(first / "age.key", restored / "age.key")
    ok(gr(restored, "init"))
    res = gitops_render(restored, "configure", "--no-validate", "--yes")
    assert res.returncode == 0 and "0 added, 0 changed, 0 removed" in res.stdout, res.stdout + res.stderr

    # starting over on purpose: a new key, and the steps to rotate it
    res = ok(gr(second, "init", "--new-age-key"))
    assert "created age key age.key" in res.stdout, res.stdout
    assert (f"1. `gitops-render configure --rotate-age-key` re-encrypts the {len(committed)} committed *.sops.* "
            "file(s) for the new key") in res.stdout, res.stdout
    assert ("kubectl -n flux-system create secret generic sops-age --from-file=age.agekey=age.key "
            "--dry-run=client -o yaml | kubectl apply -f -") in res.stdout, res.stdout
    new_pub = public_key(second / "age.key")
    assert new_pub != old_pub

    before = snapshot(second)
    res = gitops_render(second, "configure", "--no-validate", "--yes")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"nothing written: {len(committed)} committed secret file(s)" in res.stderr, res.stderr
    assert f"encrypted for {old_pub}, which age.key ({new_pub}) cannot decrypt" in res.stderr, res.stderr
    assert "Flux would stop decrypting" in res.stderr and "configure --rotate-age-key" in res.stderr, res.stderr
    assert changed_paths(before, snapshot(second)) == []

    res = gitops_render(second, "configure", "--no-validate", "--rotate-age-key")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"secrets: {len(committed)} rekeyed" in res.stdout, res.stdout
    for rel in committed:
        assert recipients(second, rel) == [new_pub], rel


def test_a_clone_of_a_configured_repo_without_its_key_keeps_working_once_the_key_is_restored(
        repo: Path, tmp_path: Path) -> None:
    """The shipped templates: the refusal names both secrets, and SOPS_AGE_KEY_FILE restores the key."""
    old_pub = public_key(repo / "age.key")
    shutil.move(repo / "age.key", tmp_path / "backup-age.key")
    before = snapshot(repo)
    res = gr(repo, "init")
    assert res.returncode == 2, res.stdout + res.stderr
    assert f"{len(secret_files(repo))} committed secret file(s)" in res.stderr, res.stderr
    assert old_pub in res.stderr and "point SOPS_AGE_KEY_FILE at it" in res.stderr, res.stderr
    assert changed_paths(before, snapshot(repo)) == []

    env = cli_env(SOPS_AGE_KEY_FILE=str(tmp_path / "backup-age.key"))
    assert "kept backup-age.key" in ok(gr(repo, "init", env=env)).stdout
    res = ok(gr(repo, "configure", "--no-validate", env=env))
    assert "0 added, 0 changed, 0 removed" in res.stdout, res.stdout


# =========================================================================== classic keys only


def test_a_post_quantum_age_key_is_refused_with_how_to_make_a_classic_one(tmp_path: Path) -> None:
    root = copy_project_repo(tmp_path / "repo")
    ok(gr(root, "init"))  # cluster.yaml with its generated secrets; the key is replaced by a post-quantum one
    (root / "age.key").unlink()
    subprocess.run([str(TOOLS / "age-keygen"), "-pq", "-o", str(root / "age.key")], check=True, capture_output=True)
    pq_pub = public_key(root / "age.key")
    assert pq_pub.startswith("age1pq1")
    # what the message claims is true: this sops cannot encrypt for a post-quantum recipient
    probe = tmp_path / "probe.yaml"
    probe.write_text("a: b\n")
    assert subprocess.run([str(SOPS), "encrypt", "--age", pq_pub, str(probe)], capture_output=True,
                          env=cli_env()).returncode != 0

    before = snapshot(root)
    for args in (("init",), ("configure", "--no-validate")):
        res = gr(root, *args)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        assert "holds a post-quantum age key" in res.stderr and "sops 3.11 cannot encrypt or decrypt" in res.stderr
        assert "`mv age.key age.key.pq`" in res.stderr and "`age-keygen -o age.key` (without -pq)" in res.stderr
        assert "AGE-SECRET-KEY" not in res.stdout + res.stderr
        assert changed_paths(before, snapshot(root)) == [], args  # not even a .gitignore line
    doctor = gr(root, "doctor")
    assert doctor.returncode == 1 and "sops 3.11 cannot encrypt or decrypt" in doctor.stdout, doctor.stdout

    shutil.move(root / "age.key", root / "age.key.pq")  # the hint, followed
    ok(gr(root, "init"))
    assert CLASSIC_KEY.search((root / "age.key").read_text())
    ok(gr(root, "configure", "--no-validate"))


# =========================================================================== samples of every data entry


def test_init_makes_each_data_entry_from_its_sample_and_names_one_without_a_sample(tmp_path: Path) -> None:
    root = copy_project_repo(tmp_path / "repo")
    settings = root / "gitops-render.toml"
    settings.write_text(settings.read_text().replace('data = ["cluster.yaml"]',
                                                     'data = ["cluster.yaml", "nodes.yaml", "extra.toml"]'))
    nodes = "# the nodes\nnodes:\n  - name: k8s-0  # the first\n    address: 10.0.0.10\n"
    (root / "nodes.sample.yml").write_text(nodes)  # .yml stands in for .yaml

    before = snapshot(root)
    res = gr(root, "init")
    assert res.returncode == 2, res.stdout + res.stderr
    assert "no sample for the data file(s) extra.toml (sample extra.sample.toml)" in res.stderr, res.stderr
    assert "nothing was written" in res.stderr and changed_paths(before, snapshot(root)) == []

    (root / "extra.sample.toml").write_text('# extra\n[extra]\nname = "x"\n')
    res = ok(gr(root, "init"))
    for name, sample in (("cluster.yaml", "cluster.sample.yaml"), ("nodes.yaml", "nodes.sample.yml"),
                         ("extra.toml", "extra.sample.toml")):
        assert f"created {name} from {sample}" in res.stdout, res.stdout
        assert stat.S_IMODE((root / name).stat().st_mode) == 0o600, name
    # one schema for the merged data: its generated secrets go into the first data file, once
    assert (root / "nodes.yaml").read_text() == nodes
    assert (root / "extra.toml").read_text() == '# extra\n[extra]\nname = "x"\n'
    assert yaml.safe_load((root / "cluster.yaml").read_text())["litellm_master_key"].startswith("sk-")
    lines = (root / ".gitignore").read_text().splitlines()
    assert {"cluster.yaml", "nodes.yaml", "extra.toml", "age.key"} <= set(lines), lines


def test_init_fills_generated_fields_of_a_toml_sample_in_place(tmp_path: Path) -> None:
    """A schema per data file: a TOML sample keeps every line but the generated values."""
    root = tmp_path / "repo"
    root.mkdir()
    (root / "gitops-render.toml").write_text(
        '[gitops-render]\noutput = "."\ndata = ["cluster.toml"]\n\n'
        '[gitops-render.schema]\n"cluster.toml" = "cluster.schema.json"\n')
    gen = {"type": "string", "x-generate": {"alphabet": "hex", "length": 40}}
    (root / "cluster.schema.json").write_text(json.dumps({
        "type": "object",
        "properties": {"name": {"type": "string"}, "token": gen,
                       "db": {"type": "object", "properties": {"password": gen, "user_token": gen,
                                                               "host": {"type": "string"}}}}}))
    sample = ('# the cluster\nname = "home"  # its name\ntoken = ""  # generated by init\n\n'
              '[db]\n# the database\nhost = "db.local"\npassword = ""\n\n# the end\n')
    (root / "cluster.sample.toml").write_text(sample)
    res = ok(gr(root, "init"))
    assert "created cluster.toml from cluster.sample.toml (3 generated secret(s) filled in)" in res.stdout, res.stdout
    text = (root / "cluster.toml").read_text()
    data = tomllib.loads(text)
    for value in (data["token"], data["db"]["password"], data["db"]["user_token"]):
        assert re.fullmatch(r"[0-9a-f]{40}", value), "a generated value does not match its x-generate spec"
    assert len({data["token"], data["db"]["password"], data["db"]["user_token"]}) == 3
    kept = [ln for ln in sample.splitlines() if '= ""' not in ln]
    assert [ln for ln in text.splitlines() if not re.search(r'(token|password) = "[0-9a-f]{40}"', ln)] == kept
    assert '\ntoken = "' in text and text.split('token = "', 1)[1].split('"', 1)[1].startswith("  # generated by init")
