"""A small on-disk cache of JSON documents, versioned, written atomically, verified on read.

Used for autotuning results and compiled-kernel metadata. Nothing is ever unpickled:
entries are JSON with a SHA-256 of their body; an entry that fails verification is
deleted and reported as a miss, so the caller recomputes it.

Example:
    >>> import tempfile
    >>> from tessera.runtime.disk_cache import DiskCache
    >>> c = DiskCache("demo", root=tempfile.mkdtemp())
    >>> c.put({"op": "matmul", "m": 128}, {"BLOCK_M": 128})
    >>> c.get({"op": "matmul", "m": 128})
    {'BLOCK_M': 128}
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Any, Optional

FORMAT_VERSION = 1


def default_root() -> str:
    """``$TESSERA_CACHE_DIR``, else ``~/.cache/tessera``."""
    return os.environ.get("TESSERA_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache", "tessera")


def software_versions() -> dict:
    """The versions that invalidate cached entries when they change."""
    import torch

    try:
        import triton

        tv = triton.__version__
    except ImportError:
        tv = None
    from .. import __version__

    return {"tessera": __version__, "torch": torch.__version__, "triton": tv, "format": FORMAT_VERSION}


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


class DiskCache:
    """A namespace of cached JSON values keyed by JSON-able keys (plus the software versions)."""

    def __init__(self, namespace: str, root: Optional[str] = None):
        self.dir = os.path.join(root or default_root(), namespace)
        self.versions = software_versions()

    def _path(self, key: Any) -> str:
        digest = hashlib.sha256(_canonical({"key": key, "versions": self.versions}).encode()).hexdigest()
        return os.path.join(self.dir, digest[:2], digest + ".json")

    def get(self, key: Any) -> Optional[Any]:
        """The stored value, or None when absent or corrupt (a corrupt file is removed)."""
        path = self._path(key)
        try:
            with open(path, "r", encoding="utf-8") as f:
                doc = json.load(f)
            body = _canonical({"key": doc["key"], "value": doc["value"]})
            if doc.get("sha256") != hashlib.sha256(body.encode()).hexdigest() or doc["key"] != json.loads(_canonical(key)):
                raise ValueError("checksum or key mismatch")
            return doc["value"]
        except FileNotFoundError:
            return None
        except (ValueError, KeyError, TypeError, OSError):
            try:
                os.remove(path)
            except OSError:
                pass
            return None

    def put(self, key: Any, value: Any) -> None:
        """Store ``value`` atomically (write to a temporary file, then rename)."""
        path = self._path(key)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        key_j, value_j = json.loads(_canonical(key)), json.loads(_canonical(value))
        body = _canonical({"key": key_j, "value": value_j})
        doc = {"key": key_j, "value": value_j, "versions": self.versions,
               "sha256": hashlib.sha256(body.encode()).hexdigest()}
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(doc, f)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
