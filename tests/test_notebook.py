"""The quickstart notebook is executed, so it cannot rot."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).parents[1] / "notebooks" / "quickstart.ipynb"


@pytest.mark.timeout(2400)  # it may be the first to need the real demo (about 5 min alone, see test_demo)
def test_quickstart_notebook_runs_and_draws(tmp_path, monkeypatch, real_demo_run):
    out, _, _ = real_demo_run  # the notebook's run_demo (the real scene) finds it done and only reads it
    monkeypatch.setenv("GEOGAN_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": tmp_path}}
    ).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pictures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(pictures) >= 4  # the scene and labels, the spectra, the split, the synthetic pairs
    text = "".join(o.get("text", "") for o in outputs)
    assert "generate" in text and "mean band Wasserstein-1" in text and "EPSG:32633" in text
    assert "labelled: 30.9%" in text and "band means within" in text
