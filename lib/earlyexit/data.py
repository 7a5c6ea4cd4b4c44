"""Data sets as decoded uint8 tensors with fixed, seeded, saved train/val/test splits.

Sources, in the order they are tried:
- CIFAR-10: a local ImageFolder copy (``train/<class>/*.jpg``, ``test/<class>/*.jpg``; a folder or a
  .tar.gz) named by ``$EARLYEXIT_CIFAR10`` or found as ``cifar10-jpeg.tar.gz`` in
  ``$EARLYEXIT_LOCAL_DATA``; else torchvision's download into the data root.
- MNIST / Fashion-MNIST: gzipped IDX files in ``$EARLYEXIT_LOCAL_DATA/{mnist,fashion-mnist}``; else download.
- CIFAR-100, KMNIST: torchvision's download. CINIC-10: an ImageFolder copy in ``$EARLYEXIT_CINIC10``
  or ``<root>/cinic10`` (train/ and test/).
- digits (sklearn's bundled 8x8 digits) and synthetic10 / synthetic100 (class prototypes plus noise)
  need nothing and serve fast tests.

Decoded images are cached as uint8 tensors in ``<root>/cache``; the validation indices are carved
from the training set by a seeded permutation and saved in ``<root>/splits`` so every notebook and
every later run sees the same split. Augmentation (random crop with padding, horizontal flip) is
done on whole batches of tensors.
"""
from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from . import rehearsal
from .paths import data_root, atomic_save

__all__ = ["DataSpec", "Split", "Dataset", "load_dataset", "TensorLoader", "DataNotFound",
           "list_datasets", "CIFAR10_CLASSES", "DATASET_SHAPES", "tensor_batches", "available_offline", "STAND_INS"]

STAND_INS: set[str] = set()   # data sets replaced by synthetic stand-ins in this process (rehearsals only)

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


class DataNotFound(FileNotFoundError):
    """A data set is neither cached, nor available locally, nor downloadable."""


@dataclass(frozen=True)
class DataSpec:
    """Which data and which split. Sizes of None keep everything that is left."""

    name: str = "cifar10"
    val_size: int = 5000
    train_size: int | None = None
    test_size: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.name not in _SOURCES:
            raise ValueError(f"unknown data set {self.name!r}; known: {', '.join(list_datasets())}")
        for field_name in ("val_size", "train_size", "test_size"):
            value = getattr(self, field_name)
            if value is not None and value < 1:
                raise ValueError(f"{field_name} must be positive, got {value}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Split:
    images: torch.Tensor   # uint8 [N, C, H, W]
    labels: torch.Tensor   # int64 [N]

    def __len__(self) -> int:
        return len(self.labels)


@dataclass
class Dataset:
    spec: DataSpec
    train: Split
    val: Split
    test: Split
    classes: list[str]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def split(self, name: str) -> Split:
        if name not in ("train", "val", "test"):
            raise ValueError(f"split must be train, val or test, got {name!r}")
        return getattr(self, name)

    def describe(self) -> str:
        return (f"{self.spec.name} from {self.source}: train {len(self.train)}, val {len(self.val)}, "
                f"test {len(self.test)} images of shape {tuple(self.train.images.shape[1:])}, "
                f"{self.num_classes} classes, split seed {self.spec.seed}")


# ---------------------------------------------------------------- raw readers
Raw = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[str], str]  # xtr, ytr, xte, yte, classes, source


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"))


def _read_image_folder(path: Path, title: str) -> Raw:
    """ImageFolder layout with train/ and test/ sub-folders, as a folder or a .tar(.gz) archive."""
    from tqdm.auto import tqdm
    items: dict[str, list[tuple[str, bytes]]] = {"train": [], "test": []}
    if path.is_dir():
        for split in items:
            for f in sorted((path / split).glob("*/*")):
                items[split].append((f.parent.name, f.read_bytes()))
    else:
        with tarfile.open(path) as tar:
            for m in tar:
                parts = Path(m.name).parts
                if m.isfile() and len(parts) >= 3 and parts[-3] in items:
                    items[parts[-3]].append((parts[-2], tar.extractfile(m).read()))
    if not items["train"] or not items["test"]:
        raise DataNotFound(f"{path} does not hold train/<class>/<image> and test/<class>/<image>")
    classes = sorted({c for c, _ in items["train"]})
    index = {c: i for i, c in enumerate(classes)}
    arrays = []
    for split in ("train", "test"):
        rows = sorted(items[split], key=lambda r: r[0])  # stable: class, then archive order
        x = np.stack([_decode(b) for _, b in tqdm(rows, desc=f"decoding {path.name}/{split}", leave=False)])
        y = np.array([index[c] for c, _ in rows], dtype=np.int64)
        arrays += [x.transpose(0, 3, 1, 2), y]
    return arrays[0], arrays[1], arrays[2], arrays[3], classes, _copy_label(title, path)


# ---------------------------------------------------------------- naming a source
# A data set is named by what it is and which copy it came from (file name and checksum), never by
# where the copy sits on this machine, so printed descriptions and saved reports are portable.
_LOCAL_KINDS = {".tar.gz": "local JPEG archive", ".tgz": "local JPEG archive", ".tar": "local image archive"}


@functools.lru_cache(maxsize=None)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _copy_label(title: str, path: Path) -> str:
    """'CIFAR-10, local JPEG archive cifar10-jpeg.tar.gz, sha256 0123456789ab' (or a folder's name)."""
    path = Path(path)
    if path.is_dir():
        return f"{title}, local ImageFolder copy {path.name}/"
    kind = next((k for suffix, k in _LOCAL_KINDS.items() if path.name.endswith(suffix)), "local copy")
    st = path.stat()
    return f"{title}, {kind} {path.name}, sha256 {_sha256(path, st.st_size, st.st_mtime_ns)[:12]}"


_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "mnist": "MNIST", "fashion_mnist": "Fashion-MNIST",
           "kmnist": "KMNIST", "cinic10": "CINIC-10"}


def dataset_title(name: str) -> str:
    """The data set's name as a paper prints it ("CIFAR-10" for "cifar10"); unknown names unchanged."""
    return _TITLES.get(name, name)


def _portable_source(name: str, source: str) -> str:
    """The source string of a cache written before sources were named portably (an absolute path, or
    'torchvision X in /path'), rewritten as the producers now write it."""
    title = _TITLES.get(name, name)
    if source.startswith("torchvision ") and " in " in source:
        return source.split(" in ", 1)[0] + " download"
    if os.path.isabs(source):
        path = Path(source)
        if path.exists():
            return _copy_label(title, path) if name not in ("mnist", "fashion_mnist") else _idx_label(title, path)
        return f"{title}, local copy {path.name}"
    return source


def _idx_label(title: str, folder: Path) -> str:
    return f"{title}, local gzipped IDX copy {folder.name}/"


def _read_idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _local(sub: str) -> Path | None:
    root = os.environ.get("EARLYEXIT_LOCAL_DATA")
    return Path(root) / sub if root else None


def _torchvision(cls_name: str, root: Path, hint: str, **kw) -> Raw:
    import torchvision.datasets as tvd
    cls = getattr(tvd, cls_name)
    try:
        tr, te = cls(root, train=True, download=True, **kw), cls(root, train=False, download=True, **kw)
    except Exception as exc:  # offline, blocked, or a broken partial download
        raise DataNotFound(f"{cls_name} is not in {root} and could not be downloaded ({exc.__class__.__name__}: "
                           f"{str(exc)[:120]}). {hint}") from exc

    def arr(ds):
        x = np.asarray(ds.data)
        x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
        return x, np.asarray(ds.targets, dtype=np.int64)
    return (*arr(tr), *arr(te), list(tr.classes), f"torchvision {cls_name} download")


def _cifar10(root: Path) -> Raw:
    explicit = os.environ.get("EARLYEXIT_CIFAR10")
    if explicit:
        if not Path(explicit).exists():
            raise DataNotFound(f"EARLYEXIT_CIFAR10={explicit} does not exist")
        return _read_image_folder(Path(explicit), "CIFAR-10")
    local = _local("cifar10-jpeg.tar.gz")
    if local is not None and local.exists():
        return _read_image_folder(local, "CIFAR-10")
    return _torchvision("CIFAR10", root, "Connect to the internet once, or set EARLYEXIT_CIFAR10 to a "
                        "CIFAR-10 copy in ImageFolder layout (a folder or .tar.gz with train/ and test/).")


def _idx_pair(folder: Path, title: str) -> Raw:
    get = lambda n: _read_idx(folder / f"{n}-ubyte.gz")  # noqa: E731
    return (get("train-images-idx3")[:, None], get("train-labels-idx1").astype(np.int64),
            get("t10k-images-idx3")[:, None], get("t10k-labels-idx1").astype(np.int64),
            [str(i) for i in range(10)], _idx_label(title, folder))


def _mnist_like(cls_name: str, local_name: str, classes: list[str] | None = None) -> Callable[[Path], Raw]:
    def read(root: Path) -> Raw:
        folder = _local(local_name)
        if folder is not None and (folder / "train-images-idx3-ubyte.gz").exists():
            raw = _idx_pair(folder, _TITLES[local_name.replace("-", "_")])
            return (*raw[:4], classes or raw[4], raw[5])
        return _torchvision(cls_name, root, f"Connect to the internet once, or put the four gzipped IDX "
                            f"files in $EARLYEXIT_LOCAL_DATA/{local_name}/.")
    return read


def _cifar100(root: Path) -> Raw:
    return _torchvision("CIFAR100", root, "CIFAR-100 has no local copy here: connect to the internet once.")


def _kmnist(root: Path) -> Raw:
    return _torchvision("KMNIST", root, "KMNIST has no local copy here: connect to the internet once.")


def _cinic10(root: Path) -> Raw:
    folder = Path(os.environ.get("EARLYEXIT_CINIC10", root / "cinic10"))
    if not folder.exists():
        raise DataNotFound(f"CINIC-10 not found at {folder}: download it (github.com/BayesWatch/cinic-10) and "
                           f"unpack it there, or set EARLYEXIT_CINIC10 to its folder (train/ and test/ inside).")
    return _read_image_folder(folder, "CINIC-10")


def _digits(root: Path) -> Raw:
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.images * (255 / 16)).round().astype(np.uint8)[:, None]
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    cut = int(0.8 * len(y))
    tr, te = order[:cut], order[cut:]
    return x[tr], y[tr], x[te], y[te], [str(i) for i in range(10)], "sklearn load_digits"


def _synthetic(num_classes: int, n_train: int, n_test: int, channels: int = 3, size: int = 32,
               label: str = "") -> Callable[[Path], Raw]:
    """Class prototypes (smooth random images) plus per-image noise: learnable in seconds."""
    def make(root: Path) -> Raw:
        g = torch.Generator().manual_seed(1234 + num_classes)
        protos = F.interpolate(torch.rand(num_classes, channels, 4, 4, generator=g), size=size, mode="bilinear",
                               align_corners=False)

        def draw(n):
            y = torch.arange(n) % num_classes
            x = protos[y] + 0.35 * torch.randn(n, channels, size, size, generator=g)
            return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy(), y.numpy()
        xtr, ytr = draw(n_train)
        xte, yte = draw(n_test)
        return (xtr, ytr, xte, yte, [f"class{i}" for i in range(num_classes)],
                label or f"synthetic ({num_classes} classes)")
    return make


_SOURCES: dict[str, Callable[[Path], Raw]] = {
    "cifar10": _cifar10,
    "cifar100": _cifar100,
    "mnist": _mnist_like("MNIST", "mnist"),
    "fashion_mnist": _mnist_like("FashionMNIST", "fashion-mnist",
                                 ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                                  "Sneaker", "Bag", "Ankle boot"]),
    "kmnist": _kmnist,
    "cinic10": _cinic10,
    "digits": _digits,
    "synthetic10": _synthetic(10, 3000, 1000),
    "synthetic100": _synthetic(100, 6000, 2000),
}


# (classes, channels, image size) of each data set: lets a dry run build models without the data
DATASET_SHAPES = {"cifar10": (10, 3, 32), "cifar100": (100, 3, 32), "mnist": (10, 1, 28),
                  "fashion_mnist": (10, 1, 28), "kmnist": (10, 1, 28), "cinic10": (10, 3, 32),
                  "digits": (10, 1, 8), "synthetic10": (10, 3, 32), "synthetic100": (100, 3, 32)}


def list_datasets() -> list[str]:
    return sorted(_SOURCES)


# ---------------------------------------------------------------- cache and splits
def _stand_in(name: str, val_size: int) -> dict:
    """A rehearsal's synthetic replacement for a data set that is not available offline: same class
    count, channels and image size, a pool just large enough for the split; never cached."""
    classes, channels, size = DATASET_SHAPES[name]
    n_train = val_size + 4 * max(rehearsal.TRAIN_IMAGES, 4 * classes)   # every class left after the validation cut
    xtr, ytr, xte, yte, names, _ = _synthetic(classes, n_train, 2 * rehearsal.EVAL_IMAGES, channels, size)(Path("."))
    STAND_INS.add(name)
    return {"train_x": torch.from_numpy(xtr), "train_y": torch.from_numpy(ytr), "test_x": torch.from_numpy(xte),
            "test_y": torch.from_numpy(yte), "classes": names,
            "source": f"synthetic stand-in for {_TITLES.get(name, name)} ({classes} classes, rehearsal)"}


def available_offline(name: str, root: Path | None = None) -> bool:
    """Whether a data set can be loaded without a download: cached, a local copy, or generated."""
    root = Path(root) if root else data_root()
    if (root / "cache" / f"{name}.pt").exists() or name in ("digits", "synthetic10", "synthetic100"):
        return True
    if name == "cifar10":
        explicit = os.environ.get("EARLYEXIT_CIFAR10")
        local = _local("cifar10-jpeg.tar.gz")
        return bool(explicit and Path(explicit).exists()) or (local is not None and local.exists())
    if name in ("mnist", "fashion_mnist"):
        folder = _local(name.replace("_", "-"))
        return folder is not None and (folder / "train-images-idx3-ubyte.gz").exists()
    if name == "cinic10":
        return Path(os.environ.get("EARLYEXIT_CINIC10", root / "cinic10")).exists()
    return False


def _load_raw(name: str, root: Path) -> dict:
    path = root / "cache" / f"{name}.pt"
    if path.exists():
        try:
            raw = torch.load(path, weights_only=True)
            raw["source"] = _portable_source(name, raw["source"])
            return raw
        except Exception as exc:
            print(f"cache {path} is unreadable ({exc.__class__.__name__}); decoding again")
    xtr, ytr, xte, yte, classes, source = _SOURCES[name](root)
    raw = {"train_x": torch.from_numpy(np.array(xtr)), "train_y": torch.from_numpy(np.array(ytr)),
           "test_x": torch.from_numpy(np.array(xte)), "test_y": torch.from_numpy(np.array(yte)),
           "classes": list(classes), "source": source}
    atomic_save(raw, path)
    return raw


def _split_indices(spec: DataSpec, n_train_pool: int, n_test: int, root: Path | None) -> dict[str, list[int]]:
    """Seeded permutation of the training pool (val first) and of the test set; saved as JSON under
    ``root`` (not saved when root is None: a rehearsal's stand-in data)."""
    if spec.val_size >= n_train_pool:
        raise ValueError(f"val_size {spec.val_size} leaves no training images (pool of {n_train_pool})")
    path = None if root is None else root / "splits" / f"{spec.name}_val{spec.val_size}_seed{spec.seed}.json"
    if path is not None and path.exists():
        saved = json.loads(path.read_text())
        if saved.get("pool") == n_train_pool and saved.get("n_test") == n_test:
            return saved
    g = torch.Generator().manual_seed(spec.seed)
    perm = torch.randperm(n_train_pool, generator=g).tolist()
    saved = {"pool": n_train_pool, "n_test": n_test, "val": perm[:spec.val_size], "train": perm[spec.val_size:],
             "test": torch.randperm(n_test, generator=g).tolist()}
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(saved))
        os.replace(tmp, path)
    return saved


def _stratified(ids: list[int], labels: torch.Tensor, limit: int, num_classes: int) -> torch.Tensor:
    """The first ``limit // num_classes`` (at least two) images of each class, in split order."""
    per_class = max(2, limit // num_classes)
    ids_t = torch.tensor(ids)
    y = labels[ids_t]
    rank = torch.zeros_like(y)
    for c in range(num_classes):
        rank[y == c] = torch.arange(int((y == c).sum()))
    return ids_t[rank < per_class]


def load_dataset(spec: DataSpec | str = "cifar10", root: str | Path | None = None, **overrides) -> Dataset:
    """Load (decoding once, then from the cache) and split a data set."""
    if isinstance(spec, str):
        spec = DataSpec(name=spec, **overrides)
    root = Path(root) if root else data_root()
    if rehearsal.active() and not available_offline(spec.name, root):
        raw = _stand_in(spec.name, spec.val_size)
        idx = _split_indices(spec, len(raw["train_y"]), len(raw["test_y"]), None)
    else:
        raw = _load_raw(spec.name, root)
        idx = _split_indices(spec, len(raw["train_y"]), len(raw["test_y"]), root)
    take = lambda ids, n: torch.tensor(ids[:n] if n else ids)  # noqa: E731
    if rehearsal.active():  # a few images of every class, so per-class statistics stay defined
        tr = _stratified(idx["train"], raw["train_y"], rehearsal.cap(spec.train_size, rehearsal.TRAIN_IMAGES),
                         len(raw["classes"]))
    else:
        tr = take(idx["train"], spec.train_size)
    va = take(idx["val"], rehearsal.cap(None, rehearsal.EVAL_IMAGES))
    # the test subset keeps file order when all of it is used, a seeded sample otherwise
    test_size = rehearsal.cap(spec.test_size, rehearsal.EVAL_IMAGES)
    te = take(idx["test"], test_size) if test_size else torch.arange(len(raw["test_y"]))
    train = Split(raw["train_x"][tr], raw["train_y"][tr])
    x = train.images.float() / 255
    mean = tuple(x.mean((0, 2, 3)).tolist())
    std = tuple(x.std((0, 2, 3)).tolist())
    return Dataset(spec, train, Split(raw["train_x"][va], raw["train_y"][va]),
                   Split(raw["test_x"][te], raw["test_y"][te]), raw["classes"], mean, std, raw["source"])


# ---------------------------------------------------------------- batches
def random_crop_flip(x: torch.Tensor, pad: int, flip: bool, g: torch.Generator) -> torch.Tensor:
    """Per-image random translation by up to ``pad`` pixels (zero padding) and horizontal flip. The
    random numbers come from the CPU generator ``g`` whatever device ``x`` is on."""
    n, _, h, w = x.shape
    dev = x.device
    if pad:
        padded = F.pad(x, (pad, pad, pad, pad))
        dy = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
        dx = torch.randint(0, 2 * pad + 1, (n,), generator=g).to(dev)
        rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
        cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
        x = padded[torch.arange(n, device=dev)[:, None, None, None],
                   torch.arange(x.shape[1], device=dev)[None, :, None, None], rows, cols]
    if flip:
        mask = (torch.rand(n, generator=g) < 0.5).to(dev)
        x = torch.where(mask[:, None, None, None], x.flip(3), x)
    return x


def tensor_batches(x: torch.Tensor, y: torch.Tensor, batch_size: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Already-prepared tensors cut into (images, labels) batches: a loader for your own data."""
    return [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(y), batch_size)]


class TensorLoader:
    """Batches of normalised float images from a uint8 split; seeded shuffle and augmentation.

    On an accelerator the uint8 images are copied to ``device`` once and every batch is cut, cropped,
    flipped and normalised there (no per-batch host work); labels come out on the same device."""

    def __init__(self, split: Split, mean, std, batch_size: int = 256, shuffle: bool = False,
                 crop_pad: int = 0, flip: bool = False, drop_last: bool = False, seed: int = 0,
                 image_size: int | None = None, channels_last: bool = False,
                 device: torch.device | str = "cpu"):
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.split, self.batch_size, self.shuffle = split, batch_size, shuffle
        self.crop_pad, self.flip, self.drop_last = crop_pad, flip, drop_last
        self.seed, self.epoch, self.image_size, self.channels_last = seed, 0, image_size, channels_last
        self.device = torch.device(device)
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.mean = (torch.tensor(mean).view(1, -1, 1, 1) * 255).to(self.device)
        self.std = (torch.tensor(std).view(1, -1, 1, 1) * 255).to(self.device)

    def __len__(self) -> int:
        n = len(self.split)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        """Shuffling and augmentation depend on (seed, epoch) only, so a resumed run repeats them."""
        self.epoch = epoch

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        x = (images.float() - self.mean) / self.std
        if self.image_size and x.shape[-1] != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", align_corners=False)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        order = order.to(self.device)
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[idx]
            if self.crop_pad or self.flip:
                x = random_crop_flip(x, self.crop_pad, self.flip, g)
            yield self.normalise(x), self.labels[idx]
