"""Batch scoring with the champion: embeddings, propensities and top-K recommendations in Spark."""
