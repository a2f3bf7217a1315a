"""Segments: t-SNE + DBSCAN clusters of the champion's embeddings, daily L1 re-assignment, RFM tiers."""
