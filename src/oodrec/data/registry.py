"""Registry of the shipped shift datasets: file roles, SHA-256 and public source URLs.

Every file is a byte-exact copy of a file in a public GitHub repository at a pinned commit (see
``shared/data/README.md`` of the project, section "Source repositories").
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DRGO = "https://raw.githubusercontent.com/user683/DRGO/cb213e73b209e16dabc8a9ced98c4f84ce57c9fc"
DRGNN = "https://raw.githubusercontent.com/WANGBohaO-jpg/DR-GNN/cb895e320f241a00e3b10bac80f6602f23a53566"

ROLES = ("train", "val", "iid_test", "ood_test")


@dataclass(frozen=True)
class FileSpec:
    """One file of a shipped dataset.

    Args:
        role: ``train``, ``val``, ``iid_test`` or ``ood_test``.
        filename: name inside the dataset folder.
        sha256: expected SHA-256 of the file's bytes.
        url: public source URL at a pinned commit.
    """

    role: str
    filename: str
    sha256: str
    url: str


@dataclass(frozen=True)
class DatasetSpec:
    """A shipped dataset: its folder, shift type, files and what is missing."""

    name: str
    shift: str
    files: tuple[FileSpec, ...]
    description: str
    missing_roles: tuple[str, ...] = ()
    """Roles the public release lacks entirely (``kuairec`` has no train)."""
    missing_note: str = ""

    def file(self, role: str) -> FileSpec | None:
        for f in self.files:
            if f.role == role:
                return f
        return None

    @property
    def needs_carving(self) -> bool:
        """True when only train + OOD test ship and val / IID test are carved from train."""
        roles = {f.role for f in self.files}
        return "train" in roles and "val" not in roles


def _f(role: str, name: str, sha: str, url: str) -> FileSpec:
    return FileSpec(role, name, sha, url)


DATASETS: dict[str, DatasetSpec] = {
    "food": DatasetSpec(
        "food",
        "temporal",
        (
            _f(
                "train",
                "train.txt",
                "6889b3c7ac2902c40f44a227f9cd9138ceaa777631930dfa9999812d9e9bfb75",
                f"{DRGO}/data_for_SELFRec/food/train.txt",
            ),
            _f(
                "val",
                "valid_iid.txt",
                "35955c06fae57612490d7b69a4c7619e121873dd05a66985630e7c2ed3fe61c2",
                f"{DRGO}/data_for_SELFRec/food/valid_iid.txt",
            ),
            _f(
                "iid_test",
                "test_iid.txt",
                "de93811d88ee7c48ac88dcd44b94be6c2832de1a788a2a087466f5bbcd044d3a",
                f"{DRGO}/data_for_SELFRec/food/test_iid.txt",
            ),
            _f(
                "ood_test",
                "test_ood.txt",
                "bb529628d6837ce88a91daf1aaf45314fd153ffd583090d8e41cd7d7470550e1",
                f"{DRGO}/data_for_SELFRec/food/test.txt",
            ),
        ),
        "Food.com, temporal shift (DRGO split of the CNSDiff authors)",
    ),
    "yelp2018": DatasetSpec(
        "yelp2018",
        "popularity",
        (
            _f(
                "train",
                "train.txt",
                "c60a46d7e9ff98d8480531fbba38d054ebb3758b5c9964d94992d5abe10d81a9",
                f"{DRGO}/data_for_SELFRec/yelp2018/train.txt",
            ),
            _f(
                "val",
                "valid_iid.txt",
                "ff35042dcae460a7539d6480c2e86d8e51072113988b7806438c2c013a28feea",
                f"{DRGO}/data_for_SELFRec/yelp2018/valid_iid.txt",
            ),
            _f(
                "iid_test",
                "test_iid.txt",
                "3e98eab701e87e4d54ecaedc8a02fc90c5adbfe71fbcdd1247ef59e113920d07",
                f"{DRGO}/data_for_SELFRec/yelp2018/test_iid.txt",
            ),
            _f(
                "ood_test",
                "test_ood.txt",
                "438d4b3577564b4f17128f22ed965e8f1f867410e320f90bbeb6b86d51a93618",
                f"{DRGO}/data_for_SELFRec/yelp2018/test.txt",
            ),
        ),
        "Yelp2018, popularity shift (DRGO); train.txt has 2 malformed lines at its top",
    ),
    "kuairec": DatasetSpec(
        "kuairec",
        "exposure",
        (
            _f(
                "iid_test",
                "test_iid.txt",
                "c291bdda8c9b9f6f6ed5c8b9229e75babea2a388f5fe6f7089564558d08cf8b8",
                f"{DRGO}/data_for_SELFRec/kuaiRec/test_iid.txt",
            ),
            _f(
                "ood_test",
                "test_ood.txt",
                "9b84b51b426348276f204a681b6be6368b18ab8f84590f48c72ee4804a8c78fa",
                f"{DRGO}/data_for_SELFRec/kuaiRec/test_ood.txt",
            ),
        ),
        "KuaiRec, exposure shift (DRGO); only the two test files are public",
        missing_roles=("train", "val"),
        missing_note=(
            "the public release of this split has no train (and no validation) file, so it cannot "
            "be trained on; build an exposure-shift split from the raw KuaiRec release "
            "(big_matrix.csv / small_matrix.csv) instead"
        ),
    ),
    "food_drgnn": DatasetSpec(
        "food_drgnn",
        "temporal",
        (
            _f(
                "train",
                "train.txt",
                "41b8f27dd9d259105e256942e0c45f74ed62e9f3d9b82f537d556e3bc36b692a",
                f"{DRGNN}/OOD_data/temporal_shift/Food/train.txt",
            ),
            _f(
                "ood_test",
                "test_ood.txt",
                "7ca5dcf2db51f608337187a02bb068d8c3279a2ecde5f320189648fd90ff7abe",
                f"{DRGNN}/OOD_data/temporal_shift/Food/test.txt",
            ),
        ),
        "Food.com, temporal shift (DR-GNN split); val / IID test carved from train",
    ),
    "coat": DatasetSpec(
        "coat",
        "exposure",
        (
            _f(
                "train",
                "train.txt",
                "3a0ab1c4ba7d1e66cfcb06a44c348331b49e92e4f46b18acfd0fb64881d76159",
                f"{DRGNN}/OOD_data/exposure_shift/coat/train.txt",
            ),
            _f(
                "ood_test",
                "test_ood.txt",
                "28e6eacf2a56c068f3d51d0bb48069cd73d442bc237af69d2b0ee9e81bcb2fcb",
                f"{DRGNN}/OOD_data/exposure_shift/coat/test.txt",
            ),
        ),
        "Coat, exposure shift (DR-GNN); 91 test pairs also in train; val / IID test carved",
    ),
    "yahoo_r3": DatasetSpec(
        "yahoo_r3",
        "exposure",
        (
            _f(
                "train",
                "train.txt",
                "ac0a159a20783a402cc6163770d9a768f4c8a8227fdb0e425acf16e1774b06a1",
                f"{DRGNN}/OOD_data/exposure_shift/yahoo/train.txt",
            ),
            _f(
                "ood_test",
                "test_ood.txt",
                "786ffcb36d54174fd7574796f75fc85724bd5500a41995e76ccd47a276147986",
                f"{DRGNN}/OOD_data/exposure_shift/yahoo/test.txt",
            ),
        ),
        "Yahoo! R3, exposure shift (DR-GNN); val / IID test carved from train",
    ),
}


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``data_dir`` if given, else ``$OODREC_DATA``, else the user cache directory."""
    if data_dir:
        return Path(data_dir).expanduser()
    env = os.environ.get("OODREC_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "oodrec" / "data"


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class DatasetStatus:
    """Status of one shipped dataset in a data directory."""

    name: str
    status: str
    """``present``, ``missing``, ``checksum mismatch`` or ``incomplete``."""
    detail: str


def dataset_status(spec: DatasetSpec, data_dir: Path, verify: bool = True) -> DatasetStatus:
    """Check which of ``spec``'s files exist in ``data_dir / spec.name`` and match their hash."""
    folder = data_dir / spec.name
    missing, bad = [], []
    for f in spec.files:
        path = folder / f.filename
        if not path.is_file():
            missing.append(f.filename)
        elif verify and sha256_file(path) != f.sha256:
            bad.append(f.filename)
    if bad:
        return DatasetStatus(spec.name, "checksum mismatch", "bad: " + ", ".join(bad))
    if len(missing) == len(spec.files):
        return DatasetStatus(spec.name, "missing", f"run `oodrec download {spec.name}`")
    if missing:
        return DatasetStatus(spec.name, "incomplete", "missing: " + ", ".join(missing))
    if spec.missing_roles:
        return DatasetStatus(
            spec.name,
            "incomplete",
            f"no {'/'.join(spec.missing_roles)} published: {spec.missing_note}",
        )
    return DatasetStatus(spec.name, "present", str(folder))
