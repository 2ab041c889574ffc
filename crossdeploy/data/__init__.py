"""The images every stage shares: the one preprocessing definition and the calibration and evaluation sets."""
