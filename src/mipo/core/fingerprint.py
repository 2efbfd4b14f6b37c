"""What makes an artifact what it is: file digests, model identities, and the fingerprint of a job.

Every resumable artifact (pairs, sample, eval partials, train checkpoints, ``mipo run`` stages) records the
fingerprint of the job that writes it: the identity of the model weights, the digest of each input file,
every setting that changes the output, and mipo's version. A resume whose fingerprint differs is refused
with one line naming what changed, so rows of two different jobs are never mixed in one file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def file_sha256(path: str | Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_identity(source: str | Path) -> str:
    """A file's sha256, or the name itself for what is not a local file (a task name, a Hub id)."""
    path = Path(source)
    if path.is_file():
        return "sha256:" + file_sha256(path)
    return str(source)


def weights_identity(source: str | Path) -> dict[str, Any]:
    """What identifies model weights: for a folder, its config and each weight file's name, size and mtime;
    for a Hub id or built-in name, the name (the Hub cache pins the revision)."""
    folder = Path(source)
    if not folder.is_dir():
        return {"model": str(source)}
    files = sorted(
        p
        for p in folder.iterdir()
        if p.suffix in (".safetensors", ".bin", ".gguf") or p.name in ("config.json", "adapter_config.json")
    )
    return {
        "model": str(folder.resolve()),
        "files": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files],
    }


def digest(value: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-able value (keys sorted)."""
    blob = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def fingerprint(**settings: Any) -> dict[str, Any]:
    """The fingerprint of a job: its output-changing settings plus mipo's version, as a plain mapping."""
    from mipo import __version__

    return json.loads(json.dumps({"mipo": __version__, **settings}, sort_keys=True, default=str))


def changes(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """``key: old -> new`` for every setting that differs (nested mappings by dotted key)."""
    out = []
    for key in sorted(set(old) | set(new), key=str):
        a, b = old.get(key, "(unset)"), new.get(key, "(unset)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += changes(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} -> {_short(b)}")
    return out


def _short(value: Any, limit: int = 60) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
