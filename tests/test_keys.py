"""Age key file handling with the real age-keygen (no fakes, no skips)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from gitops_render.core.errors import SecretsError
from gitops_render.core.runner import ToolRunner
from gitops_render.secrets.keys import (
    AgeIdentities,
    derive_fingerprint_key,
    generate_key_file,
    read_identities,
    read_public_key,
    read_public_keys,
)


@pytest.fixture(scope="module")
def runner() -> ToolRunner:
    r = ToolRunner()
    r.which("age-keygen")  # raises (fails the tests) when the real tool is missing
    return r


def test_generate_writes_private_file_and_public_key(tmp_path: Path, runner: ToolRunner) -> None:
    info = generate_key_file(runner=runner, path=tmp_path / "age.key")
    mode = stat.S_IMODE((tmp_path / "age.key").stat().st_mode)
    assert mode == 0o600
    assert info.public_key.startswith("age1") and not info.public_key.startswith("age1pq1")
    assert read_public_key(info.path) == info.public_key
    # the real age-keygen agrees on the recipient
    derived = runner.run("age-keygen", ["-y", str(info.path)]).stdout.strip()
    assert derived == info.public_key


def test_never_overwrites(tmp_path: Path, runner: ToolRunner) -> None:
    path = tmp_path / "age.key"
    generate_key_file(runner=runner, path=path)
    before = path.read_bytes()
    with pytest.raises(SecretsError, match="already exists"):
        generate_key_file(runner=runner, path=path)
    assert path.read_bytes() == before


def test_identities_are_never_shown(tmp_path: Path, runner: ToolRunner) -> None:
    path = tmp_path / "age.key"
    generate_key_file(runner=runner, path=path)
    ids = read_identities(path)
    secret = ids.identities[0]
    assert secret.startswith("AGE-SECRET-KEY-1")
    assert secret not in repr(ids) and secret not in str(ids)
    assert isinstance(ids, AgeIdentities)


def test_missing_key_file_message(tmp_path: Path) -> None:
    with pytest.raises(SecretsError) as err:
        read_identities(tmp_path / "age.key")
    assert str(err.value).startswith("age key file age.key not found: run `gitops-render init` or set SOPS_AGE_KEY_FILE")


def test_post_quantum_keys_are_rejected(tmp_path: Path, runner: ToolRunner) -> None:
    out = runner.run("age-keygen", ["-pq", "-o", str(tmp_path / "pq.key")])
    assert out.returncode == 0
    with pytest.raises(SecretsError, match="post-quantum"):
        read_identities(tmp_path / "pq.key")
    with pytest.raises(SecretsError, match="post-quantum"):
        read_public_keys(tmp_path / "pq.key")


def test_fingerprint_key_depends_on_identity(tmp_path: Path, runner: ToolRunner) -> None:
    a = generate_key_file(runner=runner, path=tmp_path / "a.key").path
    b = generate_key_file(runner=runner, path=tmp_path / "b.key").path
    ka, kb = derive_fingerprint_key(read_identities(a)), derive_fingerprint_key(read_identities(b))
    assert ka == derive_fingerprint_key(read_identities(a))
    assert ka != kb and len(ka) == 32
    assert read_identities(a).identities[0].encode() not in ka


def test_rotation_file_with_two_identities(tmp_path: Path, runner: ToolRunner) -> None:
    old = generate_key_file(runner=runner, path=tmp_path / "old.key")
    new = generate_key_file(runner=runner, path=tmp_path / "new.key")
    both = tmp_path / "both.key"
    both.write_text((tmp_path / "new.key").read_text() + (tmp_path / "old.key").read_text())
    assert read_public_keys(both) == [new.public_key, old.public_key]
    assert len(read_identities(both).identities) == 2
