"""Errors a user can fix: one sentence that names the param or file to change."""


class CrossdeployError(Exception):
    """A problem with the user's inputs or params, reported without a traceback."""


class ParityError(CrossdeployError):
    """One or more variants fell outside their parity thresholds."""
