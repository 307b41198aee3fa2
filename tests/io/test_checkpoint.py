"""``save_state`` / ``restore_state`` / ``read_metadata`` / ``CheckpointManager``.

Every restored value is compared with ``assert_array_equal``: a checkpoint stores the bits, so
anything but exact equality is a bug.
"""

from __future__ import annotations

import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest
from flax import nnx

import calibrax
from calibrax.core.state import MetricState
from calibrax.io import CheckpointManager
from calibrax.io import read_metadata
from calibrax.io import restore_state
from calibrax.io import save_state


class Net(nnx.Module):
    """Params, batch statistics, a list of layers, dropout and two RNG streams."""

    def __init__(self, din: int = 3, dout: int = 4, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.lin = nnx.Linear(din, dout, param_dtype=param_dtype, rngs=rngs)
        self.layers = nnx.List([nnx.Linear(dout, dout, rngs=rngs) for _ in range(2)])
        self.bn = nnx.BatchNorm(dout, rngs=rngs)
        self.drop = nnx.Dropout(0.5, rngs=rngs)
        self.rngs = rngs

    def __call__(self, x):
        x = self.bn(self.lin(x))
        for layer in self.layers:
            x = layer(x)
        return self.drop(x)


class Other(Net):
    """Same variables as ``Net``, another class."""


class Counter(nnx.Module):
    """64-bit and integer state next to a Python-scalar-free metric variable."""

    def __init__(self) -> None:
        self.total = MetricState(jnp.zeros((2, 3), jnp.float64))
        self.count = MetricState(jnp.zeros((), jnp.int64))


# One compiled forward pass for every Net (same structure, same cache entry): eager dispatch of
# BatchNorm and Dropout op by op is slow on a shared machine.
_forward = nnx.jit(lambda model, x: model(x))


def _net(seed: int = 0, **kwargs) -> Net:
    return Net(**kwargs, rngs=nnx.Rngs(seed, dropout=seed + 1))


def _abstract(**kwargs) -> Net:
    return nnx.eval_shape(lambda: _net(123, **kwargs))


def _leaves(module) -> list[tuple[tuple, np.ndarray]]:
    out = []
    for path, var in nnx.to_flat_state(nnx.state(module)):
        value = var.get_value()
        if jax.dtypes.issubdtype(value.dtype, jax.dtypes.prng_key):
            value = jax.random.key_data(value)
        out.append((path, np.asarray(value)))
    return out


def _assert_same_state(a, b) -> None:
    la, lb = _leaves(a), _leaves(b)
    assert [p for p, _ in la] == [p for p, _ in lb]
    for (path, x), (_, y) in zip(la, lb, strict=True):
        assert x.dtype == y.dtype, path
        np.testing.assert_array_equal(x, y, err_msg=str(path))


def _trained_net() -> Net:
    net = _net(0)
    net.train()
    _forward(net, jnp.ones((5, 3), jnp.float32))  # moves batch statistics and both RNG counters
    return net


def test_round_trip_into_abstract_module(tmp_path):
    net = _trained_net()
    save_state(tmp_path / "ckpt", net)
    abstract = _abstract()
    restored = restore_state(tmp_path / "ckpt", abstract)
    assert restored is abstract
    _assert_same_state(net, restored)
    # The RNG streams continue where they were: the same dropout mask and the same next keys.
    x = jnp.ones((5, 3), jnp.float32)
    restored.train()
    np.testing.assert_array_equal(np.asarray(_forward(net, x)), np.asarray(_forward(restored, x)))
    np.testing.assert_array_equal(
        np.asarray(jax.random.key_data(net.rngs.dropout())),
        np.asarray(jax.random.key_data(restored.rngs.dropout())),
    )


def test_round_trip_into_concrete_module_in_place(tmp_path):
    net = _trained_net()
    save_state(tmp_path / "ckpt", net)
    target = _net(99)
    kernel_var = target.lin.kernel
    restored = restore_state(tmp_path / "ckpt", target)
    assert restored is target and restored.lin.kernel is kernel_var
    _assert_same_state(net, target)


def test_round_trip_of_64_bit_and_integer_state(tmp_path):
    counter = Counter()
    counter.total[...] = jnp.arange(6, dtype=jnp.float64).reshape(2, 3) / 3
    counter.count[...] = jnp.asarray(2**40, jnp.int64)
    save_state(tmp_path / "ckpt", counter)
    restored = restore_state(tmp_path / "ckpt", nnx.eval_shape(Counter))
    _assert_same_state(counter, restored)
    assert restored.total[...].dtype == jnp.float64


def test_optimizer_round_trip_continues_training_identically(tmp_path):
    x = jnp.linspace(-1.0, 1.0, 15, dtype=jnp.float32).reshape(5, 3)

    def loss(model):
        return jnp.mean(model.lin(x) ** 2)

    @nnx.jit
    def step(model, opt):
        opt.update(model, nnx.grad(loss)(model))

    model = _net(0)
    opt = nnx.Optimizer(model, optax.sgd(1e-2, momentum=0.9), wrt=nnx.Param)
    step(model, opt)
    save_state(tmp_path / "model", model)
    save_state(tmp_path / "opt", opt)

    model2 = restore_state(tmp_path / "model", _abstract())
    opt2 = restore_state(
        tmp_path / "opt",
        nnx.eval_shape(
            lambda: nnx.Optimizer(_net(5), optax.sgd(1e-2, momentum=0.9), wrt=nnx.Param)
        ),
    )
    _assert_same_state(opt, opt2)
    assert int(opt2.step[...]) == 1
    for _ in range(2):
        step(model, opt)
        step(model2, opt2)
    _assert_same_state(model, model2)
    _assert_same_state(opt, opt2)


def test_sharded_target_keeps_its_sharding(tmp_path):
    mesh = jax.sharding.Mesh(np.array(jax.devices()[:8]), ("x",))
    sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("x"))
    counter = Counter()
    counter.total = MetricState(
        jax.device_put(jnp.arange(16, dtype=jnp.float64).reshape(8, 2), sharding)
    )
    save_state(tmp_path / "ckpt", counter)
    target = Counter()
    target.total = MetricState(jax.device_put(jnp.zeros((8, 2), jnp.float64), sharding))
    restore_state(tmp_path / "ckpt", target)
    assert target.total[...].sharding == sharding
    np.testing.assert_array_equal(np.asarray(target.total[...]), np.asarray(counter.total[...]))


def test_read_metadata(tmp_path):
    save_state(tmp_path / "ckpt", _net(), metadata={"din": 3, "dims": (4, 4), "name": "net"})
    assert read_metadata(tmp_path / "ckpt") == {
        "calibrax_version": calibrax.__version__,
        "class_name": f"{__name__}.Net",
        "metadata": {"din": 3, "dims": [4, 4], "name": "net"},
    }
    save_state(tmp_path / "bare", Counter())
    assert read_metadata(tmp_path / "bare")["metadata"] == {}


def test_save_is_atomic_via_a_temporary_directory(tmp_path, monkeypatch):
    """Orbax writes every file into ``<path>.orbax-checkpoint-tmp`` and renames it at the end."""
    seen = []
    original = ocp.CompositeCheckpointHandler.save

    def spy(self, directory, *args, **kwargs):
        seen.append((str(directory), os.path.exists(tmp_path / "ckpt")))
        return original(self, directory, *args, **kwargs)

    monkeypatch.setattr(ocp.CompositeCheckpointHandler, "save", spy)
    save_state(tmp_path / "ckpt", _net())
    assert seen == [(str(tmp_path / "ckpt") + ".orbax-checkpoint-tmp", False)]
    assert sorted(os.listdir(tmp_path)) == ["ckpt"]
    assert os.path.exists(tmp_path / "ckpt" / "commit_success.txt")


# --- errors -------------------------------------------------------------------------------------


def test_missing_path(tmp_path):
    missing = str(tmp_path / "nope")
    msg = f"expected a checkpoint directory, got {missing!r} which does not exist"
    with pytest.raises(FileNotFoundError, match=re.escape(msg)):
        restore_state(missing, _abstract())
    with pytest.raises(FileNotFoundError, match=re.escape(msg)):
        read_metadata(missing)


def test_path_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    msg = f"expected a checkpoint directory, got {str(path)!r} which is a file"
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(path, _abstract())


def test_not_a_checkpoint_directory(tmp_path):
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    msg = (
        f"expected a complete checkpoint, got {str(tmp_path / 'plain')!r} which has no "
        "commit_success.txt (an interrupted save, or not an Orbax checkpoint)"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(tmp_path / "plain", _abstract())


def test_interrupted_save_directory(tmp_path):
    tmp = tmp_path / "ckpt.orbax-checkpoint-tmp"
    save_state(tmp_path / "ckpt", Counter())
    os.rename(tmp_path / "ckpt", tmp)
    (tmp / "commit_success.txt").unlink()
    with pytest.raises(ValueError, match=re.escape("which has no commit_success.txt")):
        read_metadata(tmp)


def test_orbax_checkpoint_that_is_not_calibrax(tmp_path):
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(tmp_path / "foreign", {"w": np.zeros(3, np.float32)})
    msg = (
        "expected a calibrax checkpoint with items 'state' and 'calibrax', got "
        f"{str(tmp_path / 'foreign')!r} which has ['_CHECKPOINT_METADATA', "
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(tmp_path / "foreign", _abstract())


def _assert_one_clean_line(excinfo, path) -> None:
    err = excinfo.value
    assert str(err).startswith(f"could not read the checkpoint at {str(path)!r}: ")
    assert "\n" not in str(err)
    # Raised ``from None``: no Orbax or TensorStore traceback is chained to it.
    assert err.__cause__ is None and err.__suppress_context__


# Orbax's failed read leaves a TensorStore callback aimed at its closed event loop; Python reports
# it as unraisable after our ValueError has already been raised cleanly.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_corrupt_array_data(tmp_path):
    path = tmp_path / "ckpt"
    save_state(path, _net())
    for root, _, files in os.walk(path / "state"):
        for name in files:
            if os.path.basename(root) == "d":
                with open(os.path.join(root, name), "r+b") as f:
                    f.truncate(8)
    with pytest.raises(ValueError) as excinfo:
        restore_state(path, _abstract())
    _assert_one_clean_line(excinfo, path)


def test_corrupt_metadata_record(tmp_path):
    path = tmp_path / "ckpt"
    save_state(path, _net())
    (path / "calibrax" / "metadata").write_text("{not json")
    with pytest.raises(ValueError) as excinfo:
        read_metadata(path)
    _assert_one_clean_line(excinfo, path)


def test_shape_mismatch_names_the_variable(tmp_path):
    save_state(tmp_path / "ckpt", _net(dout=4))
    msg = (
        "expected variable `bn/bias` to have shape (5,) and dtype float32 (target module), "
        f"got shape (4,) and dtype float32 in the checkpoint at {str(tmp_path / 'ckpt')!r}"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(tmp_path / "ckpt", _abstract(dout=5))


def test_dtype_mismatch_names_the_variable(tmp_path):
    save_state(tmp_path / "ckpt", _net())
    msg = (
        "expected variable `lin/bias` to have shape (4,) and dtype float64 (target module), "
        "got shape (4,) and dtype float32"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(tmp_path / "ckpt", _abstract(param_dtype=jnp.float64))


def test_structure_mismatch_lists_the_variables(tmp_path):
    net = _net()
    net.extra = MetricState(jnp.zeros(2, jnp.float32))
    save_state(tmp_path / "ckpt", net)
    msg = (
        f"expected the checkpoint at {str(tmp_path / 'ckpt')!r} to hold the same variables as "
        "the target module, got 0 missing [] and 1 unexpected ['extra']"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(tmp_path / "ckpt", _abstract())


def test_class_mismatch(tmp_path):
    save_state(tmp_path / "ckpt", _net())
    msg = (
        f"expected a checkpoint of {__name__}.Other, got one of {__name__}.Net at "
        f"{str(tmp_path / 'ckpt')!r} (pass strict_class=False to restore anyway)"
    )
    other = nnx.eval_shape(lambda: Other(rngs=nnx.Rngs(0, dropout=1)))
    with pytest.raises(ValueError, match=re.escape(msg)):
        restore_state(tmp_path / "ckpt", other)
    restore_state(tmp_path / "ckpt", other, strict_class=False)
    _assert_same_state(_net(), other)


def test_save_refuses_existing_path_unless_overwrite(tmp_path):
    save_state(tmp_path / "ckpt", _net(0))
    msg = (
        f"expected `path` to be a new checkpoint directory, got {str(tmp_path / 'ckpt')!r} "
        "which exists (pass overwrite=True to replace it)"
    )
    with pytest.raises(FileExistsError, match=re.escape(msg)):
        save_state(tmp_path / "ckpt", _net(1))
    save_state(tmp_path / "ckpt", _net(1), overwrite=True)
    _assert_same_state(_net(1), restore_state(tmp_path / "ckpt", _abstract()))


def test_save_argument_errors(tmp_path):
    with pytest.raises(
        TypeError,
        match=re.escape("expected `module` to be an nnx.Module or other nnx.Pytree, got dict"),
    ):
        save_state(tmp_path / "a", {"w": jnp.zeros(3)})
    with pytest.raises(
        TypeError, match=re.escape("expected `metadata` to be a dict or None, got list")
    ):
        save_state(tmp_path / "a", _net(), metadata=[1])
    with pytest.raises(TypeError, match=re.escape("expected `metadata` to be JSON-serializable")):
        save_state(tmp_path / "a", _net(), metadata={"x": object()})
    msg = (
        "expected `module` to hold concrete arrays, got an abstract value at `bn/bias` "
        "(an nnx.eval_shape module cannot be saved)"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        save_state(tmp_path / "a", _abstract())
    assert not os.path.exists(tmp_path / "a")
    with pytest.raises(
        TypeError,
        match=re.escape(
            "expected `abstract_module` to be an nnx.Module or other nnx.Pytree, got int"
        ),
    ):
        restore_state(tmp_path / "a", 3)


# --- CheckpointManager --------------------------------------------------------------------------


def _counter(step: int) -> Counter:
    counter = Counter()
    counter.total[...] = jnp.full((2, 3), step / 7, jnp.float64)
    counter.count[...] = jnp.asarray(step, jnp.int64)
    return counter


def test_manager_keeps_the_newest_steps(tmp_path):
    manager = CheckpointManager(tmp_path / "run", max_to_keep=2)
    assert manager.all_steps() == [] and manager.latest_step() is None
    for step in (1, 2, 5, 10):
        manager.save(step, _counter(step), metadata={"step": step})
    assert manager.all_steps() == [5, 10]
    assert manager.latest_step() == 10
    assert sorted(os.listdir(tmp_path / "run")) == ["10", "5"]

    fresh = CheckpointManager(tmp_path / "run")
    _assert_same_state(_counter(10), fresh.restore(nnx.eval_shape(Counter)))
    _assert_same_state(_counter(5), fresh.restore(nnx.eval_shape(Counter), step=5))
    assert fresh.read_metadata()["metadata"] == {"step": 10}
    assert fresh.read_metadata(5)["metadata"] == {"step": 5}


def test_manager_without_limit_keeps_everything(tmp_path):
    manager = CheckpointManager(tmp_path / "run")
    for step in range(4):
        manager.save(step, _counter(step))
    assert manager.all_steps() == [0, 1, 2, 3]


def test_manager_ignores_and_cleans_debris_of_interrupted_saves(tmp_path):
    manager = CheckpointManager(tmp_path / "run", max_to_keep=3)
    manager.save(1, _counter(1))
    # What a killed save (``2.orbax-checkpoint-tmp``) and a killed cleanup leave behind.
    save_state(tmp_path / "run" / "2.orbax-checkpoint-tmp", _counter(2))
    save_state(tmp_path / "run" / "0.calibrax-deleting", _counter(0))
    (tmp_path / "run" / "7").mkdir()  # a directory with a step name but no commit file
    assert manager.all_steps() == [1]
    manager.save(2, _counter(2))
    assert sorted(os.listdir(tmp_path / "run")) == ["1", "2", "7"]
    assert manager.all_steps() == [1, 2]
    _assert_same_state(_counter(2), manager.restore(nnx.eval_shape(Counter)))


def test_manager_errors(tmp_path):
    for bad in (0, -1, 1.5, True):
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"expected `max_to_keep` to be a positive integer or None, got {bad!r}"
            ),
        ):
            CheckpointManager(tmp_path / "run", max_to_keep=bad)
    manager = CheckpointManager(tmp_path / "run")
    empty = f"expected a saved step in {str(tmp_path / 'run')!r}, got none"
    with pytest.raises(FileNotFoundError, match=re.escape(empty)):
        manager.restore(nnx.eval_shape(Counter))
    with pytest.raises(FileNotFoundError, match=re.escape(empty)):
        manager.read_metadata()
    manager.save(3, _counter(3))
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("expected `step` to be one of the saved steps [3], got 4"),
    ):
        manager.restore(nnx.eval_shape(Counter), step=4)
    with pytest.raises(
        ValueError,
        match=re.escape(
            f"expected a new `step`, got 3 which is already saved in {str(tmp_path / 'run')!r}"
        ),
    ):
        manager.save(3, _counter(3))
    for bad in (-1, 2.0, "4", True):
        with pytest.raises(
            ValueError,
            match=re.escape(f"expected `step` to be a non-negative integer, got {bad!r}"),
        ):
            manager.save(bad, _counter(3))
