"""The exceptions every layer shares, kept below all of them so no package imports another for a type.

CrossdeployError and its subclasses are errors a user can fix: one sentence that names the param or
file to change. RuntimeUnavailable is not an error in the inputs: a variant that raises it is skipped.
"""


class CrossdeployError(Exception):
    """A problem with the user's inputs or params, reported without a traceback."""


class ParityError(CrossdeployError):
    """One or more variants fell outside their parity thresholds."""


class RuntimeUnavailable(Exception):
    """The runtime cannot run on this machine (package or device missing); the reason says which."""
