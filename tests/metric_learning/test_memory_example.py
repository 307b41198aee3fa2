"""examples/metric_learning_memory.py (MPerClassSampler + CrossBatchMemory + AccuracyCalculator)
runs end to end; one short epoch, so the trained numbers are not checked here (the script checks
its floors from 20 epochs)."""

import importlib.util
from pathlib import Path

import jax

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "metric_learning_memory.py"


def test_memory_example_trains_and_scores(capsys):
    spec = importlib.util.spec_from_file_location("metric_learning_memory", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    # A user's script runs with JAX's default (standard) promotion; the suite's strict mode would
    # reject optax's own Adam bias correction (a float times the int32 step count).
    with jax.numpy_dtype_promotion("standard"):
        assert module.main(["--epochs", "1", "--memory", "128"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("epoch 1: mean loss ") and out[0].endswith("over 31 batches")
    table = {line.split()[0]: line.split()[1:] for line in out[2:7]}
    assert set(table) == {
        "AMI",
        "NMI",
        "mean_average_precision_at_r",
        "precision_at_1",
        "r_precision",
    }
    assert all(0.0 <= float(v) <= 1.0 for row in table.values() for v in row)
    assert out[-1] == "(floors are checked from 20 epochs)"
