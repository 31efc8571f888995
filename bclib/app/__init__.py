"""Single-image prediction: the predictor behind `bclib predict` and the notebook-08 widget."""
