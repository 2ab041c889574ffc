"""Queued DVC experiments across architectures: the support matrix and the cost growth."""
