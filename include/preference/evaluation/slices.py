"""Evaluated customers sliced the way the business looks at them, from their features as of the anchor.

* ``value_tier``: the RFM value tier (``low``, ``mid``, ``high``) that ``compute_rfm`` gives the customer
  on that date (k-means on recency, frequency and monetary, k by the elbow); ``none`` for a customer
  who had not ordered yet;
* ``new_vs_returning``: ``new`` when first seen at most ``NEW_CUSTOMER_DAYS`` before the anchor,
  else ``returning``.

Both the evaluate protocol and the daily training job slice with these, so their reports compare.
"""

from __future__ import annotations

import pandas as pd

from include.preference.evaluation.metrics import CUSTOMER
from include.preference.segments.rfm import FEATURE_COLUMNS, tiers_from_features

NEW_CUSTOMER_DAYS = 90
SLICE_COLUMNS = (CUSTOMER, "customer_has_ordered", "customer_tenure_days", *FEATURE_COLUMNS.values())


def customer_slices(features: pd.DataFrame, seed: int = 0) -> dict[str, pd.Series]:
    """Slice labels (Series indexed by customer_id) of the customers in ``features``.

    ``features``: customer feature rows as of the anchor with at least :data:`SLICE_COLUMNS`; rows
    repeating a customer (one per scored product) are read once.
    """
    missing = [c for c in SLICE_COLUMNS if c not in features.columns]
    if missing:
        raise ValueError(f"customer slices need the feature columns {', '.join(missing)}")
    people = features[list(SLICE_COLUMNS)].drop_duplicates(CUSTOMER).set_index(CUSTOMER, drop=False)
    tiers = pd.Series("none", index=people.index, dtype=object)
    if len(people):
        scored, _ = tiers_from_features(people.reset_index(drop=True), seed=seed)
        tiers.loc[scored[CUSTOMER].to_numpy()] = scored["tier"].to_numpy()
    tenure = people["customer_tenure_days"].to_numpy()
    new = pd.Series(["new" if days <= NEW_CUSTOMER_DAYS else "returning" for days in tenure], index=people.index)
    return {"value_tier": tiers.rename("value_tier"), "new_vs_returning": new.rename("new_vs_returning")}
