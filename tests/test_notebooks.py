"""notebooks/*.ipynb are stored without outputs and execute end to end (offline, CPU) with the
venv's ``python3`` kernel."""

from __future__ import annotations

import base64
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_is_a_quickstart_notebook():
    assert REPO / "notebooks" / "quickstart.ipynb" in NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip outputs before committing"


def test_python3_kernel_is_this_interpreter():
    """The kernel named python3 must run the venv's interpreter (where ltcl_lightning is installed)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    km = KernelManager(kernel_name="python3")
    cmd = km.format_kernel_cmd() if hasattr(km, "format_kernel_cmd") else spec.argv
    assert Path(cmd[0]).resolve() == Path(sys.executable).resolve(), (spec.resource_dir, cmd)


def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    monkeypatch.setenv("LTCL_NOTEBOOK_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    # 4 epochs instead of the notebook's 10 keeps the suite fast; every cell still runs
    monkeypatch.setenv("LTCL_NOTEBOOK_EPOCHS", "4")
    nb = nbformat.read(REPO / "notebooks" / "quickstart.ipynb", as_version=4)
    client = NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "SimCLR: overall" in text and "CrossEntropy: overall" in text
    pngs = [base64.b64decode(o.data["image/png"]) for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(pngs) == 2 and all(p[:8] == b"\x89PNG\r\n\x1a\n" and len(p) > 10_000 for p in pngs)
    for name in ("compare_val.png", "groups_val.png", "per_class_val.png", "per_class_val_2.png"):
        assert (tmp_path / "runs" / "report" / name).stat().st_size > 5_000
    # CrossEntropy learns the digits in a few epochs (55% after 4): far above chance (10%), so it really trained
    from ltcl_lightning.report import find_per_class_csv, read_per_class

    ce = read_per_class(find_per_class_csv(tmp_path / "runs" / "cross_entropy", "val"))
    assert ce.summary()["acc"] > 0.3
