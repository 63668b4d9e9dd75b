"""docs/notebook.ipynb, executed in a real Jupyter kernel against the simulator: the notebook user's path works."""

from __future__ import annotations

import os
import pathlib

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

NOTEBOOK = pathlib.Path(__file__).parent.parent / "docs" / "notebook.ipynb"
ROOT = str(NOTEBOOK.parent.parent)


@pytest.mark.timeout(300)
def test_the_notebook_runs_from_a_dataframe_to_a_dataframe(tmp_path, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # a real kernel: this interpreter's ipykernel (its native python3 spec)
    outputs = {i: "".join(o.get("text", "") or str(o.get("data", {}).get("text/plain", ""))
                          for o in cell.get("outputs", [])) for i, cell in enumerate(nb.cells) if cell.cell_type == "code"}
    assert outputs[3].strip() == "True done 40"
    assert "answer:input-1" in outputs[5]
    assert "answer:q0" in outputs[7]
    assert outputs[9].startswith("--model 'claude-haiku-4.5': no price table knows this model; did you mean")
    # the live bar in the cell's output (tqdm's text bar: the tests' kernel has no ipywidgets), then the
    # structured answers: invalid ones sent again, the model's fields as columns, instances, a rerun
    assert "batch-scheduler: 100%" in outputs[11] and "40/40" in outputs[11] and "saved" in outputs[11]
    assert outputs[11].strip().endswith("True True")
    assert outputs[12].strip() == "Sum True"
    assert outputs[13].strip() == "True 40"
