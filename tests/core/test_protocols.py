"""The runtime-checkable protocols: their API against the reference, structural checks, and every
registered metric, stateful metric and loss satisfying its protocol."""

from __future__ import annotations

import inspect
import typing
from typing import Any

import jax
import jax.numpy as jnp
import pytest

from calibrax.core import BatchableDatasetProtocol
from calibrax.core import BenchmarkProtocol
from calibrax.core import DatasetProtocol
from calibrax.core import Metric
from calibrax.core import MetricLearningProtocol
from calibrax.core import MetricProtocol
from calibrax.core import MetricState
from calibrax.core import StatefulMetric
from calibrax.core import StatefulMetricProtocol
from calibrax.core import protocols
from calibrax.core.registry import get_entry

from ._instances import construct
from ._instances import names

# The API of /work/shared/seed/protocols-reference.txt, word for word: member -> (parameters after
# ``self`` as (name, annotation), return annotation), or "property" -> return annotation. The
# reference page prints no members for DatasetProtocol itself, but lists ``__len__`` and
# ``__getitem__(idx)`` for BatchableDatasetProtocol, which "extends DatasetProtocol with get_batch
# capability": so DatasetProtocol is exactly those two.
_DATASET = {
    "__len__": ((), "int"),
    "__getitem__": ((("idx", "int"),), "Any"),
}
REFERENCE: dict[type, dict[str, Any]] = {
    BenchmarkProtocol: {
        "setup": ((), "None"),
        "run_training": ((), "dict[str, float]"),
        "run_evaluation": ((), "dict[str, float]"),
        "teardown": ((), "None"),
        "get_performance_targets": ((), "dict[str, float]"),
    },
    DatasetProtocol: _DATASET,
    BatchableDatasetProtocol: {
        **_DATASET,
        "get_batch": ((("batch_size", "int"), ("start_idx", "int")), "dict[str, Any]"),
    },
    MetricProtocol: {
        "name": ("property", "str"),
        "higher_is_better": ("property", "bool"),
        "compute": ((("predictions", "jax.Array"), ("targets", "jax.Array")), "Any"),
        "validate_inputs": ((("predictions", "jax.Array"), ("targets", "jax.Array")), "None"),
    },
    StatefulMetricProtocol: {
        "name": ("property", "str"),
        "update": ((("**kwargs", "Any"),), "None"),
        "compute": ((), "dict[str, float]"),
        "reset": ((), "None"),
    },
    MetricLearningProtocol: {
        "__call__": ((("embeddings", "jax.Array"), ("labels", "jax.Array")), "jax.Array"),
    },
}


def test_the_module_exports_exactly_the_reference_protocols():
    assert sorted(protocols.__all__) == sorted(p.__name__ for p in REFERENCE)


@pytest.mark.parametrize("proto", list(REFERENCE), ids=lambda p: p.__name__)
def test_protocol_api_equals_the_reference(proto):
    assert getattr(proto, "_is_runtime_protocol", False), (
        f"{proto.__name__} is not runtime_checkable"
    )
    expected = REFERENCE[proto]
    assert typing._get_protocol_attrs(proto) == set(expected)
    for member, (params, returns) in expected.items():
        attr = inspect.getattr_static(proto, member)
        if params == "property":
            assert isinstance(attr, property), member
            assert attr.fget.__annotations__ == {"return": returns}, member
            continue
        sig = inspect.signature(attr)
        got = []
        for p in list(sig.parameters.values())[1:]:  # after self
            prefix = "**" if p.kind is p.VAR_KEYWORD else "*" if p.kind is p.VAR_POSITIONAL else ""
            assert p.default is p.empty, (member, p.name)
            got.append((prefix + p.name, p.annotation))
        assert tuple(got) == params, member
        assert sig.return_annotation == returns, member


def _stub(members: set[str]) -> object:
    """An object with exactly ``members`` (properties as plain attributes, methods as no-ops)."""

    def method(self, *args, **kwargs):
        return None

    body = {m: ("value" if m in ("name",) else True) for m in members}
    body.update({m: method for m in members if m not in ("name", "higher_is_better")})
    return type("Stub", (), body)()


@pytest.mark.parametrize("proto", list(REFERENCE), ids=lambda p: p.__name__)
def test_structural_checks(proto):
    members = set(REFERENCE[proto])
    assert isinstance(_stub(members), proto)
    for missing in sorted(members):
        assert not isinstance(_stub(members - {missing}), proto), f"{proto.__name__} - {missing}"
    assert not isinstance(object(), proto)


class _Mae(Metric):
    name = "mae"
    higher_is_better = False

    def validate_inputs(self, predictions, targets):
        return None

    def _compute(self, predictions, targets):
        return jnp.mean(jnp.abs(predictions - targets))


class _Count(StatefulMetric):
    name = "count"
    higher_is_better = True

    def __init__(self) -> None:
        self.n = MetricState(jnp.zeros((), jnp.int32))

    def update(self, *, values, **kwargs) -> None:
        self.n[...] += values.shape[0]

    def compute(self) -> dict[str, jax.Array]:
        return {"count": self.n[...]}


def test_base_class_subclasses_satisfy_their_protocols():
    assert isinstance(_Mae(), MetricProtocol)
    assert not isinstance(_Mae(), StatefulMetricProtocol)
    assert isinstance(_Count(), StatefulMetricProtocol)
    assert not isinstance(_Count(), MetricProtocol)  # no validate_inputs


def _params(fn) -> list[inspect.Parameter]:
    return list(inspect.signature(fn).parameters.values())


@pytest.mark.parametrize("name", names("metric"))
def test_registered_metric_is_a_metric_protocol(name):
    metric = construct(name)
    assert isinstance(metric, MetricProtocol)
    assert isinstance(metric.name, str) and metric.name
    assert isinstance(metric.higher_is_better, bool)
    assert metric.higher_is_better == get_entry(name).higher_is_better
    for method in (metric.compute, metric.validate_inputs):
        assert [p.name for p in _params(method)] == ["predictions", "targets"], method


@pytest.mark.parametrize("name", names("stateful_metric"))
def test_registered_stateful_metric_is_a_stateful_metric_protocol(name):
    metric = construct(name)
    assert isinstance(metric, StatefulMetricProtocol)
    assert isinstance(metric, StatefulMetric)
    assert isinstance(metric.name, str) and metric.name
    # ``update`` must accept (and ignore) keywords it does not use, for nnx.MultiMetric.
    assert any(p.kind is p.VAR_KEYWORD for p in _params(metric.update))
    for method in (metric.compute, metric.reset):
        assert all(p.default is not p.empty for p in _params(method)), method


@pytest.mark.parametrize("name", names("loss"))
def test_registered_loss_is_a_metric_learning_protocol(name):
    loss = construct(name)
    assert isinstance(loss, MetricLearningProtocol)
    params = _params(loss.__call__)
    # SelfSupervisedLoss pairs two views, as pytorch-metric-learning's: (embeddings, ref_emb).
    second = "ref_emb" if name == "self_supervised_loss" else "labels"
    assert [p.name for p in params[:2]] == ["embeddings", second]
    assert all(p.default is not p.empty or p.kind is p.VAR_KEYWORD for p in params[2:])
