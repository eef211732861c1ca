"""Artifact integrity: sha256 of files and folders, and the check against an artifact's provenance.

`ftcl pretrain` (and the other commands that write artifacts) records the sha256 of each file in
the `provenance.json` beside it; everything that reads an artifact checks it first.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

PROVENANCE_FILE = "provenance.json"


def write_provenance(folder: str | Path, provenance: dict) -> Path:
    """`folder/provenance.json`, written whole (a temporary file, then a rename): an artifact folder
    without it is unfinished. Values JSON cannot hold are written as their `str`."""
    import json

    path = Path(folder) / PROVENANCE_FILE
    partial = path.with_name(PROVENANCE_FILE + ".partial")
    partial.write_text(json.dumps(provenance, indent=2, default=str))
    partial.replace(path)
    return path


def verify_artifact_files(*paths: str | Path | None) -> list[Path]:
    """Check each file or folder against the sha256 that the `provenance.json` beside it records
    (`ftcl pretrain` writes one into every artifact folder); returns the paths verified.

    ValueError names the first file whose content differs from what its provenance recorded, and a
    provenance file that cannot be read. Paths without a provenance beside them (a π* saved by
    hand with `save_pi_star`) have nothing to be checked against and are returned unverified.
    """
    import json

    verified = []
    for path in filter(None, paths):
        path = Path(path)
        provenance = path.parent / PROVENANCE_FILE
        if not provenance.is_file():
            continue
        try:
            recorded = json.loads(provenance.read_text())["sha256"]
            expected = recorded.get(path.name) if isinstance(recorded, dict) else None
        except (ValueError, KeyError, TypeError, OSError) as error:
            raise ValueError(f"{provenance} is unreadable or has no sha256 table ({type(error).__name__}: {error})") from None
        if expected is None:
            continue
        if not path.exists():
            raise ValueError(f"{path}: listed in {provenance} but missing")
        actual = sha256_of(path)
        if actual != expected:
            raise ValueError(f"{path} does not match its provenance: sha256 {actual[:16]}…, {provenance} records "
                             f"{expected[:16]}… (the file was altered, truncated or half-written; re-create it "
                             "with `ftcl pretrain` or restore it)")
        verified.append(path)
    return verified


def sha256_of(path: str | Path) -> str:
    """sha256 of a file, or of a directory (sorted relative paths and contents)."""
    path = Path(path)
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()
