"""The local Hugging Face cache: where hub files are looked up offline, and how to lay
files out in it (what ``huggingface-cli download`` leaves), so that taxonlens, open_clip
and pybioclip all find the same weights and label files on a machine without network.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path

import torch

from taxonlens.errors import TaxonlensError


class HubFileError(TaxonlensError):
    """A file of a Hugging Face repository is not in the local cache and cannot be downloaded."""


def hub_cache_dir() -> Path:
    """The hub cache in use (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str, repo_type: str = "model", cache: str | Path | None = None) -> Path:
    """``<cache>/models--ORG--NAME`` (or ``datasets--...``) of a repository."""
    return Path(cache or hub_cache_dir()) / f"{repo_type}s--{repo_id.replace('/', '--')}"


def hub_file(repo_id: str, filename: str, repo_type: str = "model") -> Path:
    """The local path of ``filename`` in ``repo_id``, downloading it only where the hub is reachable.

    Raises:
        HubFileError: the file is not cached and cannot be fetched; the message names the
            repository, the folder looked in and how to supply the file.
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=filename, repo_type=repo_type))
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError, ValueError) as e:
        raise HubFileError(f"{filename} of {repo_type} repository {repo_id} is not on this machine "
                           f"({type(e).__name__}); {offline_help(repo_id, repo_type, filename)}") from None


def offline_help(repo_id: str, repo_type: str = "model", filename: str = "") -> str:
    """Where a repository was looked for and how to bring it to an offline machine."""
    flag = " --repo-type dataset" if repo_type == "dataset" else ""
    return (f"looked in {repo_folder(repo_id, repo_type)}; downloads are off (offline or HF_HUB_OFFLINE=1). "
            f"On a machine with network run `huggingface-cli download{flag} {repo_id}{' ' + filename if filename else ''}`"
            " and copy its cache here (set HF_HOME to it)")


def state_fingerprint(config: object, state_dict: Mapping[str, torch.Tensor]) -> str:
    """A short hash of a model: its configuration (JSON-able) and 64 strided values of every
    tensor of its state dict. Cheap even for billions of parameters, and changed by any
    training step."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode())
    for name, p in state_dict.items():
        flat = p.detach().flatten()
        h.update(name.encode() + str(tuple(p.shape)).encode())
        h.update(flat[:: max(1, flat.numel() // 64)].float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def write_snapshot(repo_id: str, files: Mapping[str, bytes | Path], repo_type: str = "model",
                   cache: str | Path | None = None, revision: str | None = None) -> Path:
    """Put ``files`` (path in the repo -> bytes, or a file to link) into the hub cache as one
    snapshot: ``refs/main`` names the commit, ``snapshots/<commit>/<file>`` links to
    ``blobs/<sha256>``. Returns the snapshot folder. Large files given as paths are
    hard-linked (or copied across file systems), never read into memory."""
    root = repo_folder(repo_id, repo_type, cache)
    commit = revision or hashlib.sha1(f"taxonlens:{repo_type}:{repo_id}".encode()).hexdigest()
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(commit)
    snapshot = root / "snapshots" / commit
    for rel, data in files.items():
        blob_dir = root / "blobs"
        blob_dir.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            blob = blob_dir / _file_sha256(data)
            if not blob.exists():
                try:
                    os.link(data, blob)
                except OSError:
                    import shutil

                    shutil.copyfile(data, blob)
        else:
            blob = blob_dir / hashlib.sha256(data).hexdigest()
            blob.write_bytes(data)
        link = snapshot / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
