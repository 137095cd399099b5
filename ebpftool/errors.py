"""The one domain exception: the CLI turns it into a sentence and exit code 1."""


class EbpftoolError(Exception):
    """A problem the user can act on, said in one sentence (no traceback)."""
