"""The published split files ship inside the package (byte-identical to ../shared/splits), are
addressed by name from Python and YAML, and a wheel installed alone resolves them offline."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from ltcl_lightning import splits
from ltcl_lightning.data.cifar import CIFAR100LTDataModule
from ltcl_lightning.data.listfile import read_list_file
from ltcl_lightning.data.longtail import class_counts_from_profile

REPO = Path(__file__).resolve().parents[1]
#: published files that are the datasets' own labels (test data), not splits: not shipped
NOT_SPLITS = {"train_labels.npy", "README.md"}


def test_shipped_files_are_the_published_files(splits_dir):
    published = sorted(p.relative_to(splits_dir) for p in splits_dir.rglob("*") if p.is_file() and p.name not in NOT_SPLITS)
    shipped = sorted(p.relative_to(splits.ROOT) for p in splits.ROOT.rglob("*") if p.suffix in (".npy", ".txt"))
    assert shipped == published
    for rel in shipped:
        assert (splits.ROOT / rel).read_bytes() == (splits_dir / rel).read_bytes(), rel
    assert len(splits.names()) == len(shipped) == 53


def test_names_resolve_to_the_package_and_paths_stay_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert splits.resolve("cifar100/split1_D_i") == str(splits.ROOT / "cifar100" / "split1_D_i.npy")
    # a stem with dots (the 1 % list) is a name, not a file extension
    assert splits.resolve("imagenet100_lt/imageNet_100_sub_balance_train_0.01").endswith("_0.01.txt")
    own = tmp_path / "mine.npy"
    np.save(own, np.arange(3))
    assert splits.resolve(str(own)) == str(own)
    # an extension means a path: a missing one is an error that names the shipped file, never a fallback
    with pytest.raises(FileNotFoundError, match=r"write 'cifar100/split1_D_i' \(no extension\)"):
        splits.resolve("cifar100/split1_D_i.npy")
    with pytest.raises(FileNotFoundError, match=r"Close names: \['cifar100/split5_D_i'"):
        splits.resolve("cifar100/split9_D_i")
    # a local file with a shipped name is ambiguous
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "valIdxList").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"write \./cifar10/valIdxList"):
        splits.resolve("cifar10/valIdxList")
    assert splits.resolve("./cifar10/valIdxList") == "./cifar10/valIdxList"


@pytest.mark.parametrize(
    "value,where",
    [
        ("imagenet_lt/ImageNet_LT_train", "OpenLongTailRecognition-OLTR"),
        ("data/ImageNet_LT/ImageNet_LT_train.txt", "OpenLongTailRecognition-OLTR"),
        ("inaturalist18/iNaturalist18_train", "train2018.json"),
        ("/nowhere/iNaturalist18_train.txt", "train2018.json"),
    ],
)
def test_large_train_lists_say_where_to_get_them(value, where):
    with pytest.raises(FileNotFoundError, match=where):
        splits.resolve(value)


def test_datamodules_take_split_names(cifar100_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing relative to the repository
    dm = CIFAR100LTDataModule(
        data_dir=str(cifar100_dir), split_file="cifar100/split1_D_i", val_split_file="cifar100/valIdxList", num_workers=0
    )
    assert sorted(dm.class_counts, reverse=True) == class_counts_from_profile(100, 450, 100)
    assert sum(dm.class_counts) == 9754
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 5000
    lf = read_list_file("imagenet100_lt/imageNet_100_LT_train")
    counts = np.bincount(lf.labels)
    assert (len(lf), len(counts), counts.max(), counts.min()) == (12205, 100, 1280, 6)


def test_no_recipe_or_module_points_outside_the_package():
    offenders = []
    for path in [*(REPO / "experiments").rglob("*.yaml"), *(REPO / "ltcl_lightning").rglob("*.py")]:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "../" in line or "shared/" in line:  # the published copies and specs live outside the package
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert not offenders, offenders


# ----- the wheel alone, in a fresh virtual environment, offline -------------------------------
_DRIVER = textwrap.dedent("""
    import os, sys
    import ltcl_lightning, ltcl_lightning.splits as splits
    site = os.path.dirname(os.path.dirname(ltcl_lightning.__file__))
    assert site.startswith(sys.prefix), (ltcl_lightning.__file__, sys.prefix)
    from ltcl_lightning.cli import cli_main
    for recipe in sys.argv[2:]:
        cli = cli_main(["fit", "--config", recipe, "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu",
                        "--trainer.logger=false", "--model.init_args.backbone=tiny",
                        f"--data.init_args.data_dir={sys.argv[1]}", "--data.init_args.batch_size=8",
                        "--data.init_args.num_workers=0", "--data.init_args.persistent_workers=false"])
        dm = cli.datamodule
        assert splits.resolve(dm.split_file).startswith(site), dm.split_file
        assert len(dm.train_indices) == 9754 and cli.trainer.state.finished
        print("resolved", recipe, "->", splits.resolve(dm.split_file))
""")


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_resolves_the_recipes_split_files(cifar100_dir, tmp_path):
    src = tmp_path / "src"  # build from a copy: the build leaves build/ next to the sources
    shutil.copytree(REPO / "ltcl_lightning", src / "ltcl_lightning", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", WANDB_MODE="offline")
    run = lambda *cmd, **kw: subprocess.run(cmd, check=True, env=env, capture_output=True, text=True, **kw)  # noqa: E731
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"), str(src))
    wheel = next((tmp_path / "dist").glob("ltcl_lightning-*.whl"))
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", str(venv))
    py = venv / "bin" / "python"
    run(sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", str(wheel))
    # the dependencies (torch, lightning, ...) from the test environment, but not its packages'
    # start-up hooks (.pth files, e.g. an editable install of this repository): a plain path entry
    site = run(str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    deps = [p for p in sys.path if p.endswith("site-packages")]
    Path(site, "test_deps.pth").write_text("\n".join(deps) + "\n")
    recipes = tmp_path / "recipes"  # the recipes travel alone, without the repository
    recipes.mkdir()
    for rel in ("cifar100_lt/sdclr.yaml", "cifar100_lt/boosted_cl_i.yaml"):
        shutil.copy(REPO / "experiments" / rel, recipes / rel.replace("/", "_"))
    driver = tmp_path / "driver.py"
    driver.write_text(_DRIVER)
    out = run(str(py), str(driver), str(cifar100_dir), *sorted(str(p) for p in recipes.iterdir()), cwd=tmp_path)
    assert out.stdout.count("resolved") == 2, out.stdout + out.stderr
    help_out = run(str(venv / "bin" / "ltcl"), "--help", cwd=tmp_path).stdout
    assert "fit" in help_out
