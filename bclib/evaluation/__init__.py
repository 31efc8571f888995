"""Scoring models honestly: metrics with patient-bootstrap intervals, calibration, Grad-CAM, model cards."""
