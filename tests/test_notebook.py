"""The Colab notebook runs top to bottom on CPU at toy size (VDSR_SMOKE=1) over 8 host devices, as CI runs it."""
from pathlib import Path

import jax
import nbformat
import numpy as np
import orbax.checkpoint as ocp
import pytest
from nbclient import NotebookClient

from vdsr_jax import checkpoint

pytestmark = pytest.mark.slow

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "colab.ipynb"


def mesh_devices(workdir: Path) -> set[int]:
    """Ids of the devices the saved parameters were sharded over, read from the checkpoint's metadata."""
    with ocp.CheckpointManager((workdir / "checkpoints").absolute(), options=ocp.CheckpointManagerOptions(
            read_only=True), item_handlers={checkpoint.PARAMS: ocp.StandardCheckpointHandler()}) as manager:
        tree = manager.item_metadata(manager.latest_step())[checkpoint.PARAMS].tree
    return {d.id for leaf in jax.tree.leaves(tree) for d in np.ravel(leaf.sharding.device_mesh.mesh)}


def test_colab_notebook_trains_on_8_devices_and_saves_checkpoint_and_plot(tmp_path, monkeypatch):
    for name, value in {"VDSR_SMOKE": "1", "VDSR_WORKDIR": str(tmp_path / "run"), "JAX_PLATFORMS": "cpu",
                        "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}.items():
        monkeypatch.setenv(name, value)  # the kernel inherits this environment
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=300, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOK.parent)}}).execute()  # raises on a failing cell

    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))  # all, in order
    outputs = [output for cell in code for output in cell.outputs]
    text = "".join(output.get("text", "") for output in outputs)
    assert "8 devices" in text and "final evaluation" in text
    assert any("image/png" in output.get("data", {}) for output in outputs)  # the inline comparison

    run = tmp_path / "run"
    assert len(mesh_devices(run)) == 8
    model, params = checkpoint.load_model(run)  # readable here, on this process's single device
    assert model.depth == 3 and all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))
    assert (run / "comparison.png").stat().st_size > 0 and (run / "checkpoint.zip").stat().st_size > 0
