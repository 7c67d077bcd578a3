"""Errors the command line turns into one clear message.

`UsageError` is everything the user can fix by changing what they passed (a scenario key,
a path, an override): the CLI prints its message and exits with status 2. `RunFailed`
is a run that started and could not go on (it diverged): the file is left valid and
marked failed, and the CLI exits with status 1.
"""


class UsageError(Exception):
    """Bad input: a scenario key, a value, a file. Exit status 2, no traceback."""


class RunFailed(Exception):
    """A run stopped early (non-finite values). The trajectory file stays valid: it is the
    ``trajectory`` attribute (a :class:`meanfield.Trajectory`), every run in it, the failed
    ones marked so."""

    def __init__(self, message: str, trajectory=None):
        super().__init__(message)
        self.trajectory = trajectory
