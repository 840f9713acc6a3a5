"""The README's Python snippet runs as written (with fewer epochs), and its commands name
files that exist."""

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text()


def test_python_snippet_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    assert blocks, "the README shows how to use the library from Python"
    code = blocks[0].replace("max_epochs=30", "max_epochs=1, limit_train_batches=2, enable_progress_bar=False")
    assert code != blocks[0]
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    assert scope["model"].class_counts.sum() == sum(scope["dm"].class_counts)


def test_config_paths_in_readme_exist():
    paths = set(re.findall(r"experiments/[\w/]+\.yaml", README))
    assert "experiments/quickstart.yaml" in paths
    for p in paths:
        assert (REPO / p).is_file(), p
    for name in re.findall(r"`((?:cifar10|cifar100|imagenet|imagenet100|inat18)_?\w*/[\w]+\.yaml)`", README):
        assert (REPO / "experiments" / name).is_file(), name
