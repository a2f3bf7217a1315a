"""The feature spec is the single source of the column layout everywhere."""

from __future__ import annotations

import pytest

from include.preference.features import spec

pytestmark = pytest.mark.unit


def test_feature_names_are_unique_and_carry_their_entity():
    names = [f.name for f in spec.FEATURES]
    assert len(names) == len(set(names))
    for feature in spec.FEATURES:
        assert feature.name.startswith(f"{feature.entity}_"), feature.name
        assert feature.kind in ("numeric", "categorical")
        assert feature.transform in ("identity", "log1p")


def test_parquet_schema_and_tfrecord_schema_follow_the_spec():
    schema = spec.example_arrow_schema()
    assert tuple(schema.names) == spec.example_columns()
    record = spec.tfrecord_schema()
    for entity in spec.ENTITIES:
        packed = record["packed_numeric"][spec.packed_name(entity)]
        assert packed["names"] == list(spec.numeric_names(entity))
        assert packed["shape"] == [len(spec.numeric_names(entity))]
    assert record["packed_categorical"][spec.PACKED_CATEGORICAL]["names"] == list(spec.categorical_names())
    assert [f["name"] for f in record["features"]] == [f.name for f in spec.FEATURES]


def test_fingerprint_changes_with_the_feature_list(monkeypatch):
    before = spec.spec_fingerprint()
    assert before == spec.spec_fingerprint()
    monkeypatch.setattr(spec, "FEATURES", spec.FEATURES[:-1])
    assert spec.spec_fingerprint() != before


def test_unknown_entity_is_refused():
    with pytest.raises(ValueError, match="unknown entity"):
        spec.features_of("basket")


def test_mlflow_signature_lists_every_feature_with_its_type():
    signature = spec.mlflow_signature()
    columns = {c.name: str(c.type) for c in signature.inputs.inputs}
    assert list(columns) == [f.name for f in spec.FEATURES]
    assert {columns[f.name] for f in spec.FEATURES if f.kind == "numeric"} == {"float32"}
    assert {columns[f.name] for f in spec.FEATURES if f.kind == "categorical"} == {"object"}
    assert signature.outputs.input_names() == ["propensity"]
