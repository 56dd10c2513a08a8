"""Benchmark: the secrets stage, serial against parallel sops, and a fingerprint-cache hit.

    PYTHONPATH=src python3 bench/secrets_speed.py [N]      # N secrets (default 32)

Encrypts N small Secrets with the real sops and age (``.tools/bin``), then reconciles
them again unchanged (decrypt + compare), once with one worker and once with
``default_parallelism()`` workers; then a run served by the fingerprint cache.
Prints wall seconds per step and the speed-ups. (Moved out of the test suite: it
measures, it proves nothing.)
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path, PurePosixPath

from gitops_render.core.runner import ToolRunner
from gitops_render.secrets.keys import generate_key_file
from gitops_render.secrets.policy import SecretDecision, reconcile
from gitops_render.secrets.sops import SopsContext, default_parallelism

RULE = r"(bootstrap|kubernetes)/.*\.sops\.ya?ml"


def _config(recipient: str) -> str:
    return (f"creation_rules:\n  - path_regex: {RULE}\n    encrypted_regex: \"^(data|stringData)$\"\n"
            f"    mac_only_encrypted: true\n    age: {recipient}\nstores:\n  yaml:\n    indent: 2\n")


def _plaintexts(n: int) -> dict[PurePosixPath, bytes]:
    return {PurePosixPath(f"kubernetes/apps/app{i}/secret.sops.yaml"):
            (f"apiVersion: v1\nkind: Secret\nmetadata:\n  name: app{i}\n  namespace: default\n"
             f"stringData:\n  password: pw-{i}-0123456789\n").encode() for i in range(n)}


def _apply(root: Path, decisions: list[SecretDecision]) -> None:
    for d in decisions:
        target = root / d.path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(d.ciphertext)


def main(n: int) -> None:
    runner = ToolRunner()
    with tempfile.TemporaryDirectory(prefix="secrets-speed-") as tmp:
        root, temp = Path(tmp) / "repo", Path(tmp) / "tmp"
        root.mkdir()
        temp.mkdir()
        key = generate_key_file(root / "age.key", runner=runner)

        def ctx(cache: bool) -> SopsContext:
            return SopsContext(repo_root=root, age_key_file=key.path, sops_config_text=_config(key.public_key),
                               runner=runner, cache_dir=root / ".gitops-render/cache" if cache else None,
                               temp_root=temp)

        texts = _plaintexts(n)
        figures: dict[str, float] = {}
        for label, parallelism in (("serial", 1), ("parallel", default_parallelism())):
            shutil.rmtree(root / "kubernetes", ignore_errors=True)
            start = time.perf_counter()
            added = reconcile(ctx(False), texts, root, parallelism=parallelism)
            figures[f"encrypt {label}"] = time.perf_counter() - start
            _apply(root, added)
            start = time.perf_counter()
            same = reconcile(ctx(False), texts, root, parallelism=parallelism)
            figures[f"decrypt+compare {label}"] = time.perf_counter() - start
            assert {d.action for d in same} == {"unchanged"}, "an unchanged secret was re-encrypted"
        reconcile(ctx(True), texts, root)  # fill the cache
        start = time.perf_counter()
        reconcile(ctx(True), texts, root)
        figures["cache hit"] = time.perf_counter() - start
    print(f"[secrets speed] {n} secrets, cpu={os.cpu_count()}, parallel workers={default_parallelism()}")
    for name, seconds in figures.items():
        print(f"  {name:<26} {seconds:6.3f}s")
    print(f"  speedup encrypt  {figures['encrypt serial'] / figures['encrypt parallel']:.2f}x, "
          f"decrypt+compare {figures['decrypt+compare serial'] / figures['decrypt+compare parallel']:.2f}x")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 32)
