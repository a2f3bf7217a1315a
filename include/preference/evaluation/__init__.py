"""Evaluation on a temporal holdout: classification and per-customer ranking metrics, baselines."""
