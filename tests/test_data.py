"""Data sets: saved seeded splits, the local ImageFolder reader, augmentation, clear errors."""
import io
import tarfile

import numpy as np
import pytest
import torch

from earlyexit import data as D


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("EARLYEXIT_DATA", str(tmp_path / "data"))
    return tmp_path / "data"


def test_splits_are_seeded_disjoint_and_saved(root):
    a = D.load_dataset("synthetic10", val_size=300)
    b = D.load_dataset("synthetic10", val_size=300)
    assert torch.equal(a.val.labels, b.val.labels) and torch.equal(a.train.images, b.train.images)
    assert len(a.train) + len(a.val) == 3000 and len(a.test) == 1000
    assert (root / "splits" / "synthetic10_val300_seed0.json").exists()
    c = D.load_dataset("synthetic10", val_size=300, seed=1)
    assert not torch.equal(a.val.images, c.val.images)


def test_subsets_and_normalisation(root):
    d = D.load_dataset("synthetic10", val_size=100, train_size=200, test_size=50)
    assert (len(d.train), len(d.val), len(d.test)) == (200, 100, 50)
    x, y = next(iter(D.TensorLoader(d.train, d.mean, d.std, batch_size=200)))
    assert x.dtype == torch.float32 and abs(x.mean().item()) < 0.05 and abs(x.std().item() - 1) < 0.05


def _write_image_folder_tar(path, per_class=3):
    from PIL import Image
    with tarfile.open(path, "w:gz") as tar:
        for split in ("train", "test"):
            for cls in ("cat", "dog"):
                for i in range(per_class):
                    buf = io.BytesIO()
                    Image.fromarray(np.full((32, 32, 3), 40 if cls == "cat" else 200, np.uint8)).save(buf, "JPEG")
                    info = tarfile.TarInfo(f"copy/{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


def test_local_image_folder_archive_is_read(root, tmp_path, monkeypatch):
    archive = tmp_path / "tiny.tar.gz"
    _write_image_folder_tar(archive)
    monkeypatch.setenv("EARLYEXIT_CIFAR10", str(archive))
    d = D.load_dataset("cifar10", val_size=2)
    assert d.classes == ["cat", "dog"] and d.train.images.shape[1:] == (3, 32, 32)
    assert len(d.train) + len(d.val) == 6 and len(d.test) == 6
    dark = d.test.images[d.test.labels == 0].float().mean()
    assert dark < 80  # JPEG round trip keeps the class's brightness


def test_missing_dataset_gives_one_clear_error(root, monkeypatch, tmp_path):
    monkeypatch.setenv("EARLYEXIT_CIFAR10", str(tmp_path / "nowhere.tar.gz"))
    with pytest.raises(D.DataNotFound, match="EARLYEXIT_CIFAR10"):
        D.load_dataset("cifar10")
    monkeypatch.setenv("EARLYEXIT_CINIC10", str(tmp_path / "no-cinic"))
    with pytest.raises(D.DataNotFound, match="CINIC-10 not found"):
        D.load_dataset("cinic10")


def test_download_failure_is_reported_with_a_hint(root, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise RuntimeError("network is unreachable")
    monkeypatch.setattr(tvd, "CIFAR100", offline)
    with pytest.raises(D.DataNotFound, match="could not be downloaded.*internet"):
        D.load_dataset("cifar100")


def test_unknown_dataset_and_bad_sizes():
    with pytest.raises(ValueError, match="unknown data set"):
        D.DataSpec("imagenet22k")
    with pytest.raises(ValueError, match="val_size"):
        D.DataSpec("cifar10", val_size=0)


def test_mnist_local_copy_when_present():
    import os
    if not os.environ.get("EARLYEXIT_LOCAL_DATA"):
        pytest.skip("no local data copies")
    raw = D._SOURCES["mnist"](None)
    assert raw[0].shape == (60000, 1, 28, 28) and raw[2].shape == (10000, 1, 28, 28)
    assert abs(raw[0].mean() / 255 - 0.1307) < 1e-3


def test_crop_and_flip_keep_content():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 3 * 8 * 8, dtype=torch.uint8).reshape(2, 3, 8, 8)
    y = D.random_crop_flip(x, pad=0, flip=True, g=g)
    assert all(torch.equal(y[i], x[i]) or torch.equal(y[i], x[i].flip(2)) for i in range(2))
    z = D.random_crop_flip(x, pad=2, flip=False, g=g)
    assert z.shape == x.shape and z.dtype == torch.uint8
