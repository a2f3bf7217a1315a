"""Review text: sentence embeddings with all-MiniLM-L6-v2, run in numpy from its shipped weights."""
