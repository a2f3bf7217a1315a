"""Features: the spec, the Spark feature job, training examples and their TFRecord encoding."""
