"""Where a model name points: a local folder as it is, or a Hugging Face Hub id as its snapshot
folder in the local Hub cache (downloaded once; ``HF_HUB_OFFLINE=1`` or ``local_files_only=True``
reads the cache only)."""

from __future__ import annotations

import os
from pathlib import Path


def resolve_folder(
    name_or_path: str | os.PathLike,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """A local folder as it is, or a Hub id ('owner/name') as its snapshot folder in the local cache
    (``huggingface_hub.snapshot_download``). Raises ``ValueError`` naming ``name_or_path`` when it is
    neither, or when the Hub cannot give it (not cached while offline, no such repository or revision,
    a network error)."""
    folder = Path(name_or_path)
    if folder.is_dir():
        return folder
    if str(name_or_path).count("/") != 1 or str(name_or_path).startswith((".", "/")):
        raise ValueError(f"name_or_path={str(name_or_path)!r}: not a folder, and not a Hub id of the form 'owner/name'")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError

    name = str(name_or_path)
    try:
        folder = snapshot_download(repo_id=name, revision=revision, cache_dir=cache_dir, local_files_only=bool(local_files_only))
    except LocalEntryNotFoundError:
        raise ValueError(
            f"name_or_path={name!r}: not found in the local Hub cache ({cache_dir or 'the default cache'}), and the Hub was not "
            "asked (offline: HF_HUB_OFFLINE=1 or local_files_only=True) or could not be reached; download it once online, "
            "or pass a local folder"
        ) from None
    except RevisionNotFoundError:
        raise ValueError(f"name_or_path={name!r}: revision={revision!r} not on the Hub; allowed: a branch, tag or commit") from None
    except RepositoryNotFoundError:
        raise ValueError(f"name_or_path={name!r}: no such repository on the Hub, or it is private or gated (log in first)") from None
    except OSError as err:  # network and HTTP errors: one line, not a traceback
        raise ValueError(f"name_or_path={name!r}: could not be downloaded from the Hub ({str(err).splitlines()[0]})") from None
    return Path(folder)
