"""Image datasets defined by list files: an image root plus ``relative/path label`` lines.

The format of every published ImageNet-LT, ImageNet-100-LT and iNaturalist 2018 split (spec
data_and_eval.md section 1, :mod:`ltcl_lightning.splits`). The parser keeps no per-line Python
object: the file stays one byte buffer, and each line is two offsets and a label in numpy
arrays, so 437,513 iNat lines parse in 0.1-0.2 s (benchmarks/RESULTS.md), and forked DataLoader
workers share the arrays instead of copying (and reference-counting) half a million strings.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import cached_property, partial
from typing import Literal

import numpy as np
import torch
import torchvision
from lightning.pytorch.utilities import rank_zero_info
from torch.utils.data import Dataset

from ltcl_lightning import splits
from ltcl_lightning.data import batched as B
from ltcl_lightning.data.augment import Augmentation, EvalView
from ltcl_lightning.data.base import IndexedDataset, LongTailDataModule, _as_augmentation
from ltcl_lightning.data.longtail import check_val_per_class, hold_out_per_class
from ltcl_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MultiView, build_view, eval_transform

_WHITESPACE = np.zeros(256, dtype=bool)
_WHITESPACE[[9, 10, 11, 12, 13, 32]] = True
_SEPARATOR = np.zeros(256, dtype=bool)
_SEPARATOR[[9, 32]] = True
_DIGIT = np.zeros(256, dtype=bool)
_DIGIT[48:58] = True
_MAX_LABEL_DIGITS = 18  # int64 holds every 18-digit number

#: how many missing images an error lists before "and N more"
MAX_REPORTED = 5


class ListFile:
    """A parsed list file: the raw bytes plus, for every non-blank line, where its path starts
    and ends, its label and its 1-based line number (for error messages).

    Build with :func:`read_list_file`, or :meth:`from_pairs` for lists that come from elsewhere
    (e.g. the iNat COCO-style JSON annotations).
    """

    def __init__(
        self,
        source: str,
        buffer: np.ndarray,
        starts: np.ndarray,
        ends: np.ndarray,
        labels: np.ndarray,
        line_numbers: np.ndarray,
        unit: str = "line",
    ):
        self.source = source
        #: what ``line_numbers`` count in messages: "line" of a text file, "image" of a JSON file
        self.unit = unit
        self.buffer = buffer
        self.starts = starts
        self.ends = ends
        self.labels = labels
        self.line_numbers = line_numbers

    @classmethod
    def from_pairs(cls, source: str, paths: Sequence[str], labels: Sequence[int], unit: str = "image") -> ListFile:
        encoded = [os.fsencode(p) for p in paths]
        lengths = np.fromiter((len(b) for b in encoded), dtype=np.int64, count=len(encoded))
        ends = np.cumsum(lengths)
        starts = ends - lengths
        buffer = np.frombuffer(b"".join(encoded), dtype=np.uint8)
        return cls(source, buffer, starts, ends, np.asarray(labels, dtype=np.int64), np.arange(1, len(encoded) + 1, dtype=np.int64), unit)

    def __len__(self) -> int:
        return len(self.labels)

    def path(self, i: int) -> str:
        """The relative path of entry ``i`` (decoded as the OS decodes file names)."""
        return os.fsdecode(self.buffer[self.starts[i] : self.ends[i]].tobytes())

    def where(self, i: int) -> str:
        """Where entry ``i`` is (``file, line n``), for messages."""
        return f"{self.source}, {self.unit} {int(self.line_numbers[i])}"

    def label_set(self) -> np.ndarray:
        return np.unique(self.labels)

    def subset(self, index: np.ndarray, source: str | None = None) -> ListFile:
        """The entries ``index`` (in that order), sharing this list's bytes; line numbers kept."""
        index = np.asarray(index, dtype=np.int64)
        return ListFile(
            self.source if source is None else source,
            self.buffer,
            self.starts[index],
            self.ends[index],
            self.labels[index],
            self.line_numbers[index],
            self.unit,
        )


def _line_text(buffer: np.ndarray, start: int, end: int, limit: int = 200) -> str:
    text = buffer[start:end].tobytes().decode("utf-8", errors="replace")
    return text if len(text) <= limit else text[:limit] + "..."


def read_list_file(path: str | os.PathLike, what: str = "list file") -> ListFile:
    """Parse ``relative/path label`` lines (the path may contain spaces: the label is the last
    field). Blank lines and trailing ``\\r`` / spaces are ignored; anything else that is not a
    path followed by an integer raises with the line number and its content."""
    path = splits.resolve(os.fspath(path))  # a shipped list by name (ltcl_lightning.splits), or a path
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(
            f"{what} {path!r} does not exist. Pass the path to a text file with one "
            "'relative/path label' line per image (e.g. ImageNet_LT_train.txt)."
        ) from None
    except OSError as err:  # a directory, no permission, I/O error
        raise OSError(f"{what} {path!r} could not be read: {err}") from None
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 byte-order mark written by some editors
        raw = raw[3:]
    buf = np.frombuffer(raw, dtype=np.uint8)
    if buf.size == 0:
        raise ValueError(f"{what} {path!r} is empty; expected one 'relative/path label' line per image.")
    last = buf.size - 1
    newlines = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], newlines + 1)).astype(np.int64)
    ends = np.concatenate((newlines, [buf.size])).astype(np.int64)
    line_numbers = np.arange(1, len(starts) + 1, dtype=np.int64)
    # strip surrounding whitespace (few iterations: usually just the "\r" of Windows line ends)
    while (m := (ends > starts) & _WHITESPACE[buf[np.maximum(ends - 1, 0)]]).any():
        ends[m] -= 1
    while (m := (ends > starts) & _WHITESPACE[buf[np.minimum(starts, last)]]).any():
        starts[m] += 1
    keep = ends > starts
    starts, ends, line_numbers = starts[keep], ends[keep], line_numbers[keep]
    if len(starts) == 0:
        raise ValueError(f"{what} {path!r} has no entries; expected one 'relative/path label' line per image.")

    values, sep, negative, bad = _parse_labels(buf, starts, ends)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} {path!r}, line {int(line_numbers[i])}: malformed line "
            f"{_line_text(buf, int(starts[i]), int(ends[i]))!r} ({int(bad.sum())} malformed lines in all). "
            "Expected 'relative/path label': an image path, a space, an integer class label."
        )
    labels = np.where(negative, -values, values)

    # the path ends before the run of separators that precedes the label
    path_ends = sep.copy()
    while (m := (path_ends > starts) & _SEPARATOR[buf[np.maximum(path_ends - 1, 0)]]).any():
        path_ends[m] -= 1
    offsets = np.int32 if buf.size < 2**31 else np.int64  # halves the offsets' memory for any real list
    return ListFile(path, buf, starts.astype(offsets), path_ends.astype(offsets), labels, line_numbers.astype(offsets))


def _parse_labels(buf: np.ndarray, starts: np.ndarray, ends: np.ndarray):
    """Label value, separator position, sign and malformed flag of every line.

    The label is the field after the last separator: read it backwards from the line end, one
    character per step, for the lines still undecided (a pass per label character, about five,
    over the lines, never a pass over the whole buffer)."""
    n = len(starts)
    values = np.zeros(n, dtype=np.int64)
    sep = np.full(n, -1, dtype=np.int64)
    negative = np.zeros(n, dtype=bool)
    bad = np.zeros(n, dtype=bool)
    pending = np.arange(n)
    scale = 1
    for k in range(_MAX_LABEL_DIGITS + 2):  # up to 18 digits, a minus sign, the separator
        pos = ends[pending] - 1 - k
        inside = pos > starts[pending]  # the path keeps at least one character
        ch = buf[np.maximum(pos, 0)]
        signed = negative[pending]
        is_sep = inside & _SEPARATOR[ch] & (k > 0)
        is_digit = inside & _DIGIT[ch] & ~signed & (k < _MAX_LABEL_DIGITS)
        is_minus = inside & (ch == 45) & ~signed & (k > 0)
        sep[pending[is_sep]] = pos[is_sep]
        values[pending[is_digit]] += (ch[is_digit].astype(np.int64) - 48) * scale
        negative[pending[is_minus]] = True
        bad[pending[~(is_sep | is_digit | is_minus)]] = True
        pending = pending[is_digit | is_minus]
        scale *= 10
        if pending.size == 0:
            break
    bad[pending] = True  # still reading digits after 18: not a class index
    return values, sep, negative, bad


def check_labels(lf: ListFile, num_classes: int, what: str) -> None:
    """Every label in [0, num_classes)."""
    bad = (lf.labels < 0) | (lf.labels >= num_classes)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{what} {lf.source!r} has {int(bad.sum())} labels outside [0, {num_classes}) "
            f"(first: label {int(lf.labels[i])} at {lf.unit} {int(lf.line_numbers[i])}, {lf.path(i)!r}). "
            f"num_classes is {num_classes}: pass the number of classes of this list "
            "(--data.init_args.num_classes=...) or fix the labels."
        )


def check_same_classes(train: ListFile, other: ListFile, what: str) -> None:
    """``other`` (an evaluation or probe list) holds exactly the classes of the training list."""
    train_set, other_set = train.label_set(), other.label_set()
    if np.array_equal(train_set, other_set):
        return
    only_train = np.setdiff1d(train_set, other_set)
    only_other = np.setdiff1d(other_set, train_set)
    raise ValueError(
        f"{what} {other.source!r} and the training list {train.source!r} have different class sets: "
        f"{len(only_train)} classes only in training (first: {only_train[:10].tolist()}), "
        f"{len(only_other)} only in the {what} (first: {only_other[:10].tolist()}). "
        "Both lists must come from the same benchmark split."
    )


def find_missing(root: str, lf: ListFile) -> tuple[int, list[tuple[int, str]]]:
    """Count the entries whose image file does not exist; return (count, first few (i, path)).

    Lists each directory once (``os.scandir``) instead of one ``stat`` per image."""
    by_dir: dict[str, list[tuple[int, str]]] = defaultdict(list)
    for i in range(len(lf)):
        rel = lf.path(i)
        head, tail = os.path.split(rel)
        by_dir[head].append((i, tail))
    missing: list[tuple[int, str]] = []
    for head, items in by_dir.items():
        try:
            with os.scandir(os.path.join(root, head)) as it:
                names = {e.name for e in it if not e.is_dir()}
        except (FileNotFoundError, NotADirectoryError):
            names = set()
        missing += [(i, os.path.join(head, tail)) for i, tail in items if tail not in names]
    missing.sort()
    return len(missing), missing[:MAX_REPORTED]


def missing_message(root: str, lf: ListFile, count: int, first: list[tuple[int, str]]) -> str:
    shown = ", ".join(f"{p!r} ({lf.unit} {int(lf.line_numbers[i])})" for i, p in first)
    more = f" and {count - len(first)} more" if count > len(first) else ""
    return (
        f"{count} of {len(lf)} images listed in {lf.source!r} do not exist under data_dir={root!r}: "
        f"{shown}{more}. Check data_dir (the folder the list's relative paths start from) and that "
        "the images were extracted there."
    )


#: PIL modes of one-channel images deeper than 8 bits (16-bit PNG, 32-bit integer TIFF)
_DEEP_GRAY = {"I;16": 16, "I;16L": 16, "I;16B": 16, "I;16N": 16, "I": 16}


def pil_loader(path: str):
    """Decode to RGB the way ``torchvision.datasets.folder.pil_loader`` does, with two fixes:
    16-bit grayscale images are scaled to 8 bits (``value / 257``; PIL's ``convert("RGB")``
    clips them, so they became all white), and a file that does not decode (truncated JPEG,
    not an image) raises an ``OSError`` that names it."""
    from PIL import Image

    try:
        with open(path, "rb") as f:
            img = Image.open(f)
            if img.mode in _DEEP_GRAY:
                arr = np.asarray(img, dtype=np.float64)
                if arr.max(initial=0) > 65535 or arr.min(initial=0) < 0:
                    raise OSError(f"{img.mode} values span [{arr.min()}, {arr.max()}], outside 16 bits")
                gray = Image.fromarray(np.round(arr / 257.0).astype(np.uint8), mode="L")
                return gray.convert("RGB")
            return img.convert("RGB")
    except FileNotFoundError:
        raise
    except (OSError, ValueError, SyntaxError) as err:  # PIL: truncated data, unknown format, bad header
        raise OSError(
            f"image {path!r} cannot be decoded ({type(err).__name__}: {err}): the file is truncated or not an "
            "image. Re-extract it from the archive, or remove its line from the list file."
        ) from None


def _where(value) -> str:
    """The absolute path a list name or path resolves to (for comparing two lists)."""
    try:
        return os.path.abspath(splits.resolve(value))
    except (FileNotFoundError, ValueError):  # reported where the file is read; here only compared
        return os.path.abspath(os.fspath(value))


def read_bytes(path: str) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (what a loader worker does on the device-decode path)."""
    return torchvision.io.read_file(path)


def is_jpeg(data: torch.Tensor) -> bool:
    return data.numel() >= 3 and data[:3].tolist() == [0xFF, 0xD8, 0xFF]


def decode_images(data: list[torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Decode encoded images (1-D uint8 host tensors) to (3, H, W) uint8 RGB on ``device``:
    the JPEGs in one batched ``torchvision.io.decode_jpeg(..., device=)`` call (nvJPEG on a
    GPU), other formats (PNG, 16-bit PNG) on the host and copied, to the values :func:`pil_loader`
    gives: 16-bit grey rounded to ``value / 257`` (its fix), 16-bit colour by its high byte (PIL's
    own reading), grey (+ alpha) replicated to RGB, alpha dropped."""
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    jpeg = [i for i, d in enumerate(data) if is_jpeg(d)]
    out: list[torch.Tensor | None] = [None] * len(data)
    if jpeg:
        decoded = decode_jpeg([data[i] for i in jpeg], mode=ImageReadMode.RGB, device=device)
        for i, im in zip(jpeg, decoded):
            out[i] = im
    for i, d in enumerate(data):
        if out[i] is None:
            im = decode_image(d, mode=ImageReadMode.UNCHANGED)
            grey = im.shape[0] <= 2  # L or LA
            if im.dtype == torch.uint16:  # 16-bit PNG (257 is odd: (v + 128) // 257 == round(v / 257))
                im = ((im.to(torch.int32) + 128) // 257 if grey else im.to(torch.int32) >> 8).to(torch.uint8)
            im = im[:1].expand(3, -1, -1) if grey else im[:3]
            out[i] = im.contiguous().to(device)
    return out  # type: ignore[return-value]


class EncodedBatch:
    """A batch of encoded images: sample indices, the files' bytes (host tensors), labels. The
    datamodule's ``on_after_batch_transfer`` decodes and augments it on the device."""

    def __init__(self, index: torch.Tensor, data: list[torch.Tensor], target: torch.Tensor, split: str):
        self.index, self.data, self.target, self.split = index, data, target, split

    def to(self, device, non_blocking: bool = False) -> EncodedBatch:
        # the bytes stay on the host: decode_jpeg takes host buffers and decodes on the device
        return EncodedBatch(
            self.index.to(device, non_blocking=non_blocking), self.data, self.target.to(device, non_blocking=non_blocking), self.split
        )

    def pin_memory(self) -> EncodedBatch:
        return EncodedBatch(self.index.pin_memory(), self.data, self.target.pin_memory(), self.split)

    def __len__(self) -> int:
        return len(self.index)


def _encoded_collate(items, split: str) -> EncodedBatch:
    index = torch.tensor([i for i, _, _ in items], dtype=torch.long)
    target = torch.tensor([t for _, _, t in items], dtype=torch.long)
    return EncodedBatch(index, [v[0] for _, v, _ in items], target, split)


def _bytes_only(data: torch.Tensor) -> list[torch.Tensor]:
    return [data]


class ListFileDataset(Dataset):
    """``(PIL image, label)`` for every entry of a :class:`ListFile`, paths relative to ``root``.

    A missing image raises at access with the path and the list line; nothing is skipped.
    """

    def __init__(self, root: str, list_file: ListFile, loader: Callable[[str], object] = pil_loader):
        self.root = os.fspath(root)
        self.list_file = list_file
        self.targets = list_file.labels
        self.loader = loader

    def __len__(self) -> int:
        return len(self.list_file)

    def __getitem__(self, i: int):
        full = os.path.join(self.root, self.list_file.path(i))
        try:
            img = self.loader(full)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"image {full!r} (listed in {self.list_file.where(i)}) does not exist. Check data_dir "
                "(the folder the list's relative paths start from), or pass verify=True to check every "
                "image when the datamodule is set up."
            ) from None
        return img, int(self.targets[i])


def class_names_from_paths(lf: ListFile, num_classes: int, depth: int = 1) -> list[str]:
    """Name each class after the folder of its first image (ImageNet: the wnid;
    ``depth=2`` keeps the parent too, e.g. ``Plantae/7477`` for iNat)."""
    classes, first = np.unique(lf.labels, return_index=True)
    names = [str(c) for c in range(num_classes)]
    for c, i in zip(classes.tolist(), first.tolist()):
        parts = lf.path(i).replace("\\", "/").split("/")[:-1]
        if parts:
            names[c] = "/".join(parts[-depth:])
    return names


def resize_for(image_size: int) -> int:
    """The evaluation resize that keeps the ImageNet 256 -> 224 ratio (8/7) at any size."""
    return int(round(image_size * 8 / 7))


class ListFileDataModule(LongTailDataModule):
    """A long-tailed benchmark given by list files (ImageNet-LT, ImageNet-100-LT, iNat 2018).

    Class counts, names and groups come from the training list. The validation stage uses
    ``val_list`` (or ``test_list`` when there is none), the test stage ``test_list`` (or
    ``val_list``). ``fewshot_list`` (e.g. ``imageNet_100_sub_balance_train_0.01.txt``) is the
    training set of the linear probes: :meth:`probe_dataloader` serves it with the evaluation view.
    """

    default_num_classes: int = 0
    class_name_depth: int = 1
    list_what = "list file"

    def __init__(
        self,
        data_dir: str,
        train_list: str,
        val_list: str | None = None,
        test_list: str | None = None,
        fewshot_list: str | None = None,
        val_per_class: int = 0,
        val_seed: int = 0,
        num_classes: int | None = None,
        image_size: int = 224,
        verify: bool = False,
        decode: Literal["workers", "device"] = "workers",
        *,
        num_workers: int = 8,
        mean: Sequence[float] | None = IMAGENET_MEAN,
        std: Sequence[float] | None = IMAGENET_STD,
        **kwargs,
    ):
        """
        Args:
            data_dir: image root; the list files' paths are relative to it.
            train_list: ``relative/path label`` list of the training images (defines the class
                counts, names and Many/Medium/Few groups).
            val_list, test_list: evaluation lists (at least one of them).
            fewshot_list: optional probe training list (e.g. the 1% balanced subset).
            num_classes: classes in the data; every class in [0, num_classes) must have a
                training image (a different count raises, naming the right one).
            image_size: crop size of every view; evaluation resizes to ``round(image_size*8/7)``
                (256 for 224) and centre-crops when ``eval_view='eval'``.
            verify: check at set-up that every listed image exists (one directory listing per
                folder); otherwise a missing image raises when it is first loaded.
            decode: ``workers`` (PIL decode and per-sample augmentation in the loader workers,
                the CPU path) or ``device``: workers read the files' bytes only; JPEGs are
                decoded in batches on the training device (``torchvision.io.decode_jpeg``,
                nvJPEG on a GPU) and the views built there by the augmentations' batched
                backend (``data/augment.py``), each image with its own parameters.
            num_workers: loader processes (8: decoding full-size JPEGs needs them).
            mean, std: normalisation, the ImageNet statistics.
            **kwargs: the other arguments of
                :class:`~ltcl_lightning.data.base.LongTailDataModule` (``batch_size``,
                ``train_views``, ``sampler``: ``instance`` / ``class_balanced`` / ``sqrt``, ...),
                with its defaults.
        """
        super().__init__(num_workers=num_workers, mean=mean, std=std, **kwargs)
        num_classes = self.default_num_classes if num_classes is None else num_classes
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if image_size < 1:
            raise ValueError(f"image_size must be >= 1, got {image_size}")
        if val_list is None and test_list is None:
            raise ValueError("pass val_list or test_list (or both): the evaluation images")
        self.val_per_class = check_val_per_class(
            val_per_class, hint=" With a hold-out, give the evaluation list as test_list.", val_list=val_list
        )
        self.val_seed = val_seed
        self.data_dir = os.fspath(data_dir)
        self.train_list = train_list
        self.val_list = val_list
        self.test_list = test_list
        self.fewshot_list = fewshot_list
        self.num_classes = num_classes
        self.image_size = image_size
        self.verify = verify
        if decode not in ("workers", "device"):
            raise ValueError(f"decode must be 'workers' or 'device', got {decode!r}")
        if self.device_resident:
            raise ValueError(
                "list-file data cannot be device_resident (the images do not fit in device memory): set "
                "device_resident=false; decode='device' decodes and augments the batches on the device"
            )
        self.decode = decode
        self._verified: set[str] = set()

    # ----- lists ------------------------------------------------------------------------------
    def read_list(self, path: str, what: str) -> ListFile:
        """Parse one list (subclasses override to read other annotation formats)."""
        return read_list_file(path, what=what)

    @cached_property
    def _holdout(self) -> tuple[ListFile, ListFile | None]:
        """(training entries, the ``val_per_class`` hold-out or None)."""
        lf = self._full_train_file
        if not self.val_per_class:
            return lf, None
        train, val, _ = hold_out_per_class(lf.labels, np.arange(len(lf)), self.val_per_class, seed=self.val_seed)
        return lf.subset(train), lf.subset(val, source=f"{lf.source} (val_per_class={self.val_per_class} hold-out)")

    @property
    def train_file(self) -> ListFile:
        """The training list's entries (without a ``val_per_class`` hold-out)."""
        return self._holdout[0]

    @cached_property
    def _full_train_file(self) -> ListFile:
        lf = self.read_list(self.train_list, "training list")
        check_labels(lf, self.num_classes, "training list")
        counts = np.bincount(lf.labels, minlength=self.num_classes)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            present = int((counts > 0).sum())
            hint = (
                f" The list has {present} classes labelled 0..{int(lf.labels.max())}: for a list with "
                f"{int(lf.labels.max()) + 1} classes pass num_classes={int(lf.labels.max()) + 1}."
                if present == int(lf.labels.max()) + 1
                else ""
            )
            raise ValueError(
                f"{len(empty)} of {self.num_classes} classes have no training image in {lf.source!r} (first: {empty[:10].tolist()}).{hint}"
            )
        return lf

    def _eval_file(self, path: str, what: str) -> ListFile:
        lf = self.read_list(path, what)
        check_labels(lf, self.num_classes, what)
        check_same_classes(self.train_file, lf, what)
        return lf

    @cached_property
    def val_file(self) -> ListFile:
        if self._holdout[1] is not None:
            return self._holdout[1]
        if self.val_list is None:
            rank_zero_info(f"no val_list: validating on test_list={self.test_list}")
            return self.test_file
        return self._eval_file(self.val_list, "validation list")

    @cached_property
    def test_file(self) -> ListFile:
        if self.test_list is None:
            rank_zero_info(f"no test_list: testing on val_list={self.val_list}")
            return self.val_file
        return self._eval_file(self.test_list, "test list")

    @cached_property
    def fewshot_file(self) -> ListFile:
        if self.fewshot_list is None:
            raise ValueError("no fewshot_list was given: pass the probe training list (e.g. the 1% subset)")
        return self._eval_file(self.fewshot_list, "few-shot list")

    def train_targets(self) -> np.ndarray:
        return self.train_file.labels

    @property
    def validates_on_test(self) -> bool:
        """True unless a ``val_per_class`` hold-out or a validation list other than the test
        list: without ``val_list`` validation uses the test list, without ``test_list`` the test
        stage evaluates the validation images (the selection set)."""
        if self.val_per_class:
            return False
        if self.val_list is None or self.test_list is None:
            return True
        return _where(self.val_list) == _where(self.test_list)

    def class_names_list(self) -> list[str]:
        return class_names_from_paths(self.train_file, self.num_classes, self.class_name_depth)

    # ----- datasets -----------------------------------------------------------------------------
    def _view(self, view):
        # the "eval" preset resizes (8/7) then centre-crops here: list-file images come in any size
        if view == "eval":
            return eval_transform(self.image_size, self.mean, self.std, resize=resize_for(self.image_size))
        return build_view(view, self.image_size, self.mean, self.std)

    def train_transform(self) -> MultiView:
        return MultiView([self._view(v) for v in self.train_views])

    def eval_transform(self) -> MultiView:
        return MultiView([self._view(self.eval_view)])

    def _dataset(self, lf: ListFile, transform) -> IndexedDataset:
        if self.verify and lf.source not in self._verified:
            count, first = find_missing(self.data_dir, lf)
            if count:
                raise FileNotFoundError(missing_message(self.data_dir, lf, count, first))
            self._verified.add(lf.source)
        return IndexedDataset(ListFileDataset(self.data_dir, lf), lf.labels, transform)

    # ----- device decode ------------------------------------------------------------------------
    def _loader(self, ds, train: bool, split: str = "train", collate_fn=None):
        if self.decode != "device":
            return super()._loader(ds, train, split, collate_fn)
        # the loader reads the files' bytes only; on_after_batch_transfer decodes and augments
        # them (the datasets themselves keep decoding images, for kNN and the probes)
        base = ds.base
        encoded = IndexedDataset(ListFileDataset(base.root, base.list_file, loader=read_bytes), base.targets, _bytes_only, ds.indices)
        return super()._loader(encoded, train, split, collate_fn=partial(_encoded_collate, split="train" if train else split))

    def _device_view(self, view) -> Augmentation:
        return _as_augmentation(EvalView(resize_for(self.image_size)) if view == "eval" else view, "decode='device' view")

    @cached_property
    def train_augmentations(self) -> list[Augmentation]:
        return [self._device_view(v) for v in self.train_views]

    @cached_property
    def eval_augmentation(self) -> Augmentation:
        return self._device_view(self.eval_view)

    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        if not isinstance(batch, EncodedBatch):
            return super().on_after_batch_transfer(batch, dataloader_idx)
        device = batch.index.device
        images = decode_images(batch.data, device)
        augs = self.train_augmentations if batch.split == "train" else [self.eval_augmentation]
        gen, host = self._generator(device), self._generator(torch.device("cpu"), stream="boxes")
        norm = self._normalisation(device) or (None, None)
        views = [B.normalize(a.batched_list(images, gen, host, self.image_size), *norm) for a in augs]
        return batch.index, views, batch.target

    def build_datasets(self, stage: str) -> dict:
        _ = self.class_counts  # validates the training list at set-up for every stage
        out = {}
        if stage == "fit":
            out["train"] = self._dataset(self.train_file, self.train_transform())
        if stage in ("fit", "validate"):
            out["val"] = self._dataset(self.val_file, self.eval_transform())
        if stage in ("test", "predict"):
            out["test"] = self._dataset(self.test_file, self.eval_transform())
        if self.fewshot_list is not None and stage in ("fit", "validate", "test"):
            out["fewshot"] = self._dataset(self.fewshot_file, self.eval_transform())
        return out

    def probe_dataloader(self, which: Literal["fewshot", "train"] = "fewshot"):
        """Unshuffled loader of the probe training images (evaluation view), for linear probes
        on pre-computed features: the few-shot list, or the whole training list."""
        if which == "fewshot":
            ds = self.datasets.get("fewshot")
            if ds is None:
                ds = self._dataset(self.fewshot_file, self.eval_transform())
        elif which == "train":
            ds = self._dataset(self.train_file, self.eval_transform())
        else:
            raise ValueError(f"which must be 'fewshot' or 'train', got {which!r}")
        return self._loader(ds, train=False, split="probe")
