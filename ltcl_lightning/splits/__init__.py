"""The published long-tailed split files, shipped inside the package, and their names.

A split is named ``<dataset>/<file name without extension>``, e.g. ``cifar100/split1_D_i`` or
``imagenet100_lt/imageNet_100_sub_balance_train_0.01``; every ``split_file`` / ``*_list``
argument of the datamodules accepts such a name or a path to a file of one's own:

- a value that names a shipped file and has no file extension is the shipped copy (if a file
  of that exact name also exists on disk, the value is ambiguous and refused: write
  ``./cifar100/split1_D_i`` for the local file);
- anything else is a path, used as given (a missing file is an error; nothing falls back to a
  shipped copy).

Shipped (byte for byte the files the papers' repositories publish):

======================  ===================================================================
``cifar10/``            ``trainIdxList`` (45,000), ``valIdxList`` (5,000), ``split{1..5}_D_i``
                        (11,165: 4500 ... 45), ``split{1..5}_D_b``, ``split{1..5}_S_b``
                        (SDCLR); int64 indices into the 50,000 CIFAR-10 train images
``cifar100/``           ``trainIdxList`` (40,000), ``valIdxList`` (5,000), ``split{1..5}_D_i``
                        (9,754: 450 ... 4), ``split{1..5}_D_b``, ``split{1..5}_S_b`` (SDCLR),
                        ``split{1..5}_test_{100,50}shot`` (BoostedCL's probe sets)
``imagenet_lt/``        ``ImageNet_LT_val`` (20,000), ``ImageNet_LT_test`` (50,000),
                        ``imageNet_sub_balance_train_0.01`` (the 1 % few-shot list); OLTR
``imagenet100_lt/``     ``imageNet_100_LT_train`` (12,205), ``imageNet_100_BL_train``,
                        ``ImageNet_100_val``, ``ImageNet_100_test`` (5,000),
                        ``imageNet_100_sub_balance_train_0.01``; SDCLR
``inaturalist18/``      ``iNaturalist18_val`` (24,426); as ProCo / BalancedCL use it
======================  ===================================================================

``valIdxList`` is disjoint from ``trainIdxList`` and from every ``D_i`` / ``D_b``: it is the
held-out validation split the CIFAR recipes select their best epoch on.

Not shipped (too large): the ImageNet-LT train list (115,846 lines) and the iNaturalist 2018
train list (437,513 lines); :func:`resolve` names where to get them.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

#: the folder holding the shipped files (``<dataset>/<file>``)
ROOT = Path(__file__).resolve().parent
_EXTENSIONS = (".npy", ".txt")
_FILE_TYPES = (".npy", ".txt", ".json")

#: names of published files that are not shipped -> where a user gets them
NOT_SHIPPED: dict[str, str] = {
    "imagenet_lt/ImageNet_LT_train": (
        "the ImageNet-LT train list (115,846 lines, 'train/<wnid>/<file>.JPEG label') is not shipped "
        "(too large). Download ImageNet_LT_train.txt with the OLTR splits (the 'ImageNet_LT_open' "
        "folder linked from https://github.com/zhmiao/OpenLongTailRecognition-OLTR) and pass its "
        "path as train_list"
    ),
    "inaturalist18/iNaturalist18_train": (
        "the iNaturalist 2018 train list (437,513 lines) is not shipped (too large). Pass the "
        "official annotations instead: train_json=<path to train2018.json> from the iNat 2018 "
        "download (https://github.com/visipedia/inat_comp/tree/master/2018), or the path to an "
        "iNaturalist18_train.txt list as train_list"
    ),
}


def names() -> list[str]:
    """Every shipped split name (``<dataset>/<file name without extension>``), sorted."""
    return sorted(f"{p.parent.name}/{p.stem}" for p in ROOT.glob("*/*") if p.suffix in _EXTENSIONS and p.is_file())


def _shipped(name: str) -> Path | None:
    for ext in _EXTENSIONS:
        candidate = ROOT / f"{name}{ext}"
        if candidate.is_file():
            return candidate
    return None


def path(name: str) -> Path:
    """The shipped file of a split name; raises with the close names if there is none."""
    found = _shipped(name) if _is_name(name) else None
    if found is not None:
        return found
    if name in NOT_SHIPPED:
        raise FileNotFoundError(f"split {name!r}: {NOT_SHIPPED[name]}.")
    close = difflib.get_close_matches(name, names(), n=4, cutoff=0.6)
    hint = f" Close names: {close}." if close else f" Shipped: {_summary()}."
    raise FileNotFoundError(f"{name!r} is not a split file shipped with ltcl_lightning.{hint}")


def _summary() -> str:
    by_folder: dict[str, int] = {}
    for n in names():
        folder = n.split("/")[0]
        by_folder[folder] = by_folder.get(folder, 0) + 1
    listed = ", ".join(f"{k}/ ({v} files)" for k, v in sorted(by_folder.items()))
    return f"{listed}; ltcl_lightning.splits.names() lists them"


def _is_name(value: str) -> bool:
    """``<dataset>/<stem>``: two non-empty parts, not ``./``-relative, no file extension (the
    stem may hold dots: ``imageNet_sub_balance_train_0.01``)."""
    parts = value.split("/")
    return len(parts) == 2 and all(parts) and not value.startswith(".") and not parts[1].lower().endswith(_FILE_TYPES)


def resolve(value: str | os.PathLike) -> str:
    """The file a ``split_file`` / list argument means: a shipped split by name, else the path.

    Raises ``FileNotFoundError`` for a missing file (naming where to get the published train
    lists that are not shipped) and ``ValueError`` for a name that is also a local file."""
    text = os.fspath(value)
    shipped = _shipped(text) if _is_name(text) else None
    if shipped is not None:
        if os.path.exists(text):
            raise ValueError(
                f"{text!r} is both a split shipped with ltcl_lightning and a file under {os.getcwd()}: "
                f"write ./{text} for the local file, or {shipped} for the shipped one."
            )
        return str(shipped)
    if os.path.exists(text):
        return text
    stem = Path(text).stem
    for key, where in NOT_SHIPPED.items():
        if stem == key.split("/")[1]:
            raise FileNotFoundError(f"{text!r} does not exist: {where}.")
    if _is_name(text):
        path(text)  # raises with the close names
    candidate = f"{Path(text).parent.name}/{stem}"
    hint = f" The published file of that name is shipped: write {candidate!r} (no extension)." if _shipped(candidate) else ""
    raise FileNotFoundError(
        f"split/list file {text!r} does not exist.{hint} Pass a shipped split by name "
        f"(e.g. 'cifar100/split1_D_i'; {_summary()}) or the path to a file of your own."
    )
