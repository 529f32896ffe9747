"""Rows of a `datasets` save_to_disk folder, or of a Hugging Face hub dataset."""

from __future__ import annotations

from pathlib import Path

from trainables.errors import DataError
from trainables.sources.common import HUB_PREFIX


def disk_rows(p: Path) -> list[dict]:
    import datasets

    try:
        data = datasets.load_from_disk(str(p))
    except FileNotFoundError as e:
        raise DataError(
            f"data.path={p}: a folder, but not one written by datasets' save_to_disk (no "
            "dataset_info.json / state.json); save it with Dataset.save_to_disk or give a file"
        ) from e
    return dataset_rows(data)


def hub_rows(path: str) -> list[dict]:
    """A Hugging Face dataset, every split, where the hub (or its cache) can be reached."""
    parts = path[len(HUB_PREFIX) :].split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise DataError(f"data.path={path}: expected hub:<org>/<name> or hub:<org>/<name>/<subset>")
    repo, subset = "/".join(parts[:2]), (parts[2] if len(parts) == 3 else None)
    import huggingface_hub

    if not huggingface_hub.constants.HF_HUB_OFFLINE:
        # One quick request first: `datasets` itself retries for half a minute offline.
        try:
            huggingface_hub.dataset_info(repo, timeout=10)
        except Exception as e:  # network and HTTP errors come from several libraries
            raise DataError(
                f"data.path={path}: the Hugging Face hub cannot give {repo} "
                f"({type(e).__name__}); check the name and the network, or download the data "
                "and point data.path at the file or folder"
            ) from e
    import datasets

    try:
        data = datasets.load_dataset(repo, subset)
    except Exception as e:  # offline, missing subset, gated, corrupt cache: all one answer
        detail = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DataError(
            f"data.path={path}: cannot load {repo} from the Hugging Face hub or its cache "
            f"({detail}); where HF_HUB_OFFLINE=1 only cached datasets load: download it where "
            "the hub can be reached, or point data.path at a file or folder"
        ) from e
    return dataset_rows(data)


def dataset_rows(data) -> list[dict]:
    import datasets

    # A DatasetDict's splits are read one after another: medtune splits by group itself.
    parts = list(data.values()) if isinstance(data, datasets.DatasetDict) else [data]
    return [row for part in parts for row in part.to_list()]
