"""The tutorial notebook runs top to bottom on a tiny budget and shows what it promises."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "01_transfer_learning_strategies.ipynb"
TINY_BUDGET = {
    "TRANSFERLAB_NB_TRAIN_SIZE": "200",
    "TRANSFERLAB_NB_IMAGE_SIZE": "32",
    "TRANSFERLAB_NB_EPOCHS": "1",
    "TRANSFERLAB_NB_TEST_SIZE": "300",
}


def _text(cell) -> str:
    """Everything a code cell showed: streams, results and displays (text and HTML), and errors."""
    parts = []
    for out in cell.get("outputs", []):
        if out["output_type"] == "stream":
            parts.append(out["text"])
        elif out["output_type"] == "error":
            parts.append(f"{out['ename']}: {out['evalue']}")
        else:
            data = out.get("data", {})
            parts += [data.get("text/plain", ""), data.get("text/html", ""), data.get("text/markdown", "")]
    return "".join(parts)


def test_notebook_is_stored_without_outputs():
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_notebook_runs_on_a_tiny_budget(tmp_path, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    for key, value in TINY_BUDGET.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("TRANSFERLAB_NB_OUTPUT_DIR", str(tmp_path / "runs"))  # nothing lands in the repo's logs/
    nb = nbformat.read(NOTEBOOK, as_version=4)
    # the kernel inherits this process's environment, so it reads the budget above
    client = NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [_text(c) for c in code if any(o["output_type"] == "error" for o in c.outputs)]
    assert not errors, errors
    everything = "\n".join(_text(c) for c in code)
    for expected in ("timm data config", "trainable params", "trainable%", "Q1.", "Q2.", "Q3."):
        assert expected in everything, expected
    figures = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert figures >= 3  # the samples, the loss curves and the comparison
    comparison = next(_text(c) for c in code if "trainable %" in _text(c) and "extra memory (MB)" in _text(c))
    for strategy in ("feature extraction", "fine-tuning", "LoRA r="):
        assert strategy in comparison, strategy
    runs = sorted((tmp_path / "runs").glob("[0-9]*/metrics.json"))
    assert len(runs) == 6  # feature extraction, fine-tuning, and the 2 x 2 LoRA grid
