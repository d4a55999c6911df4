"""Pipeline error classes: one base, :class:`FormatError`."""

from __future__ import annotations


class FormatError(Exception):
    """A manifest or chunk that is malformed or of an unsupported format version."""


class IntegrityError(FormatError):
    """Data that fails verification: checksum, AEAD tag, MAC, or chunk sequence.

    The message names what failed and, for chunks, the backup id and chunk index.
    """


class MissingChunkError(IntegrityError):
    """A chunk listed in the manifest could not be found in storage."""


class WrongKeyError(FormatError):
    """The backup was sealed under a different master key than the one supplied."""
