"""Fixtures shared by the integration tests: a feature chain and training sets built once per session."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from include.preference.features.build import build_features
from include.preference.features.examples import ExampleSettings, build_training_examples
from include.preference.storage import PartitionRef
from tests.support.lake import clone

LAST = 33
# Training sets for the model tests: anchors inside the chain, a 3-day horizon so that a later
# anchor's labels still lie inside the validated history.
TRAINING_SETTINGS = ExampleSettings(horizon_days=3, negatives_per_positive=4, seed=5)
TRAIN_ANCHORS = (27, 28, 29)
HOLDOUT_ANCHOR = 32


@pytest.fixture(scope="session")
def chain(validated_history, spark):
    """A full build at day 28, then incremental days 29..34; and a full build of day 34 elsewhere.

    Day 34 is the last of the chain (``days[LAST]``); days 31..34 subtract days 1..4 from the
    30-day window and every incremental day subtracts one from the 7-day window.
    """
    source, days = validated_history
    lake = clone(source, "chain")
    runs = [build_features(spark, lake, days[27], mode="full")]
    runs += [build_features(spark, lake, day) for day in days[28 : LAST + 1]]
    full = clone(source, "full")
    build_features(spark, full, days[LAST], mode="full")
    return lake, full, days, runs


@pytest.fixture(scope="session")
def training_sets(chain, spark, tmp_path_factory) -> dict[str, Any]:
    """Examples for three consecutive anchors (training) and a later one (holdout), from the chain."""
    lake, _, days, _ = chain
    out = tmp_path_factory.mktemp("training-sets")
    sets = {}
    for index in (*TRAIN_ANCHORS, HOLDOUT_ANCHOR):
        anchor = days[index]
        ref = PartitionRef("training", "", anchor)
        counts = build_training_examples(spark, lake, anchor, TRAINING_SETTINGS, ref)
        # The trainer reads shards from its own disk (as a training worker does after fetching them).
        local = out / anchor.isoformat()
        for name in counts["shards"]:
            lake.store.get_file(lake.prefix(ref) + name, local / name)
        sets[anchor] = {"ref": ref, "dir": local, "counts": counts}
    train_days = [days[i] for i in TRAIN_ANCHORS]
    return {
        "lake": lake,
        "train": train_days,
        "holdout": days[HOLDOUT_ANCHOR],
        "files": [str(p) for d in train_days for p in sorted((sets[d]["dir"] / "tfrecord").glob("*.tfrecord.gz"))],
        "rows": sum(sets[d]["counts"]["examples"] for d in train_days),
        "table": lambda day: lake.read_arrow(sets[day]["ref"]),
        "frame": lambda day: lake.read_arrow(sets[day]["ref"]).to_pandas(),
        "sets": sets,
    }


@pytest.fixture(scope="session")
def small_model(training_sets, tmp_path_factory) -> Path:
    """A model trained briefly on the training anchors (for scoring and segment tests): its file."""
    from include.preference.features import spec
    from include.preference.model import feature_statistics
    from include.preference.training.trainer import TrainSettings, train

    tables = [training_sets["frame"](day) for day in training_sets["train"]]
    import pandas as pd

    frame = pd.concat(tables, ignore_index=True)
    stats = feature_statistics({c: frame[c].to_numpy() for c in spec.numeric_names()})
    work = tmp_path_factory.mktemp("small-model")
    result = train(
        training_sets["files"],
        training_sets["rows"],
        stats,
        work,
        settings=TrainSettings(epochs=6, global_batch_size=128),
    )
    return Path(result.model_path)


@pytest.fixture(scope="session")
def small_profile(training_sets, tmp_path_factory) -> Path:
    """The customer profile autoencoder trained by the project's loop on the training anchors: its file."""
    import pandas as pd

    from include.preference.features import spec
    from include.preference.model import feature_statistics
    from include.preference.training.trainer import TrainSettings, train

    frame = pd.concat([training_sets["frame"](day) for day in training_sets["train"]], ignore_index=True)
    stats = feature_statistics({c: frame[c].to_numpy() for c in spec.numeric_names()})
    result = train(
        training_sets["files"],
        training_sets["rows"],
        stats,
        tmp_path_factory.mktemp("small-profile"),
        settings=TrainSettings(epochs=20, global_batch_size=128),
        model_kind="profile",
    )
    return Path(result.model_path)
