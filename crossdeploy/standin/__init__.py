"""The trained stand-in: the deployed architecture trained on digits here, its conversions and its INT8 verdicts."""
