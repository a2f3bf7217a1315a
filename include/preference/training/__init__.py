"""Training: tf.data input pipelines, distributed training, checkpoints."""
