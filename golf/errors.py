"""User-facing errors. The CLI prints these as one clean message (no traceback) and exits with code 2."""


class GolfError(Exception):
    """Bad input or an unmet precondition that the user can fix: the message names the input and what
    was expected."""


class DataError(GolfError):
    """A corpus, shard, tokenizer or manifest that is missing, corrupt or inconsistent."""


class ArtifactError(GolfError):
    """A packaged artifact that is malformed, truncated, unsafe or over the size cap."""


class TrainingError(GolfError):
    """Training cannot go on (e.g. a non-finite loss); the last good checkpoint is kept."""
