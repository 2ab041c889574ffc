"""Serving the SavedModel: the TF Serving repository the package stage writes."""
