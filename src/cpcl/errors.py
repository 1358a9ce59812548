"""The errors a user can act on.

Each is a :class:`CpclError` whose message is one sentence (or a short list) naming the file, record or
option at fault and, where there is one, what to do instead. The command line prints the message and
exits with status 2 (bad usage or input); a check that ran and failed (``cpcl data check`` finding
problems, an ONNX parity check) exits with 1. This module imports nothing, so the command line can catch
these errors without importing the libraries that raise them.
"""


class CpclError(Exception):
    """Base class of the errors whose message is meant for the user (exit status 2)."""


class UsageError(CpclError):
    """Options that do not fit together, or a request the command cannot carry out as given."""


class OutputExistsError(CpclError):
    """A command would write over the outputs of an earlier one."""


class DataChangedError(CpclError):
    """A run would continue on other data than it started on."""


class BusyError(CpclError):
    """Another process is writing the run, index or export a command would write."""


class DamagedFileError(CpclError):
    """A file cpcl wrote (a checkpoint, an index, pseudo labels) no longer matches the checksum written with it, or
    was cut short."""
