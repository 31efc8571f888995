"""From files on disk to training batches: scanners, splits, the packed cache, the tf.data pipeline."""
