"""The classifiers: builders, ImageNet weights, training helpers, cached backbone features."""
