"""Download shipped datasets into the data directory and verify their checksums."""

from __future__ import annotations

import logging
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from oodrec.data.registry import DatasetSpec, sha256_file
from oodrec.errors import DataValidationError
from oodrec.paths import mkstemp_shared

logger = logging.getLogger(__name__)


def file_url(spec: DatasetSpec, filename: str, source_url: str, base_url: str | None) -> str:
    """The URL to fetch: the pinned public URL, or ``{base_url}/{dataset}/{filename}`` (mirror)."""
    if base_url:
        return f"{base_url.rstrip('/')}/{spec.name}/{filename}"
    return source_url


def download_dataset(
    spec: DatasetSpec,
    data_dir: Path,
    base_url: str | None = None,
    force: bool = False,
    show_progress: bool = False,
    timeout: float = 60.0,
) -> list[Path]:
    """Fetch every file of ``spec`` into ``data_dir / spec.name`` and verify its SHA-256.

    A file already present with the right checksum is kept unless ``force``. Files are written to
    a temporary name and renamed only after the checksum matches, so a failed download never
    leaves a corrupt file behind.

    Args:
        spec: the dataset to fetch.
        data_dir: the data directory.
        base_url: a mirror holding ``{dataset}/{filename}``; ``None`` uses the public source URLs.
        force: re-download files that are already present and valid.
        show_progress: show a progress bar per file.
        timeout: network timeout in seconds.

    Returns:
        The paths written or verified.

    Raises:
        DataValidationError: a download failed or its checksum does not match.
    """
    folder = data_dir / spec.name
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for f in spec.files:
        target = folder / f.filename
        if target.is_file() and not force and sha256_file(target) == f.sha256:
            logger.info("%s: already present and verified", target)
            written.append(target)
            continue
        url = file_url(spec, f.filename, f.url, base_url)
        fd, tmp_name = mkstemp_shared(folder, f".{f.filename}.", ".part")
        tmp = Path(tmp_name)
        try:
            with os.fdopen(fd, "wb") as out:
                _fetch(url, out, timeout, show_progress, f.filename)
            got = sha256_file(tmp)
            if got != f.sha256:
                raise DataValidationError(
                    f"checksum mismatch for {url}: expected sha256 {f.sha256}, got {got}; "
                    f"the file was not saved"
                )
            os.replace(tmp, target)
            written.append(target)
        finally:
            if tmp.exists():
                tmp.unlink()
    return written


def _fetch(url: str, out, timeout: float, show_progress: bool, label: str) -> None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (http/file URLs)
            total = int(resp.headers.get("Content-Length") or 0) or None
            if show_progress:
                from tqdm import tqdm

                with tqdm(total=total, unit="B", unit_scale=True, desc=label) as bar:
                    while chunk := resp.read(1 << 16):
                        out.write(chunk)
                        bar.update(len(chunk))
            else:
                shutil.copyfileobj(resp, out)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DataValidationError(f"could not download {url}: {exc}") from None
