"""Model evaluation and scoring outputs: discrimination metrics, calibration, limits."""
