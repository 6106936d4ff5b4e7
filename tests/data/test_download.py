"""`oodrec download` against a local mirror (file:// URL): no network."""

from __future__ import annotations

import shutil

import pytest

from oodrec.cli import main
from oodrec.data.download import download_dataset
from oodrec.data.registry import DATASETS, dataset_status
from oodrec.errors import DataValidationError


def test_download_from_mirror_verifies(tmp_path, real_data, capsys):
    mirror = tmp_path / "mirror"
    shutil.copytree(real_data / "coat", mirror / "coat")
    target = tmp_path / "data"
    rc = main(["-q", "download", "coat", "--data-dir", str(target), "--base-url", mirror.as_uri()])
    assert rc == 0
    assert "2 file(s) verified" in capsys.readouterr().out
    assert dataset_status(DATASETS["coat"], target).status == "present"


def test_download_checksum_mismatch_keeps_nothing(tmp_path, real_data):
    mirror = tmp_path / "mirror" / "coat"
    shutil.copytree(real_data / "coat", mirror)
    (mirror / "test_ood.txt").write_text("0 1\n")
    target = tmp_path / "data"
    with pytest.raises(DataValidationError, match=r"checksum mismatch for .*test_ood\.txt"):
        download_dataset(DATASETS["coat"], target, base_url=(tmp_path / "mirror").as_uri())
    assert not (target / "coat" / "test_ood.txt").exists()
    assert not list((target / "coat").glob("*.part"))


def test_download_unreachable_is_clear(tmp_path):
    with pytest.raises(DataValidationError, match=r"could not download"):
        download_dataset(DATASETS["coat"], tmp_path, base_url=(tmp_path / "none").as_uri())
