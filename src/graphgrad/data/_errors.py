"""Exceptions raised by :mod:`graphgrad.data`."""

from __future__ import annotations

__all__ = ["ChecksumError", "DataFormatError", "DatasetNotFoundError", "DownloadError"]


class DataFormatError(ValueError):
    """A data file is not in the format it claims to be (bad magic, truncated, corrupt...).

    The message always names the file and what is wrong with it.
    """


class DatasetNotFoundError(FileNotFoundError):
    """A data set's files are not in any of the places looked at.

    The message lists every path tried and how to get the files.
    """


class DownloadError(RuntimeError):
    """A download could not be completed (network error, bad server reply...)."""


class ChecksumError(DownloadError):
    """A downloaded file's SHA-256 differs from the expected one.

    Attributes:
        path: the file that was being downloaded.
        expected: the SHA-256 it should have had (hex).
        actual: the SHA-256 it had (hex).
    """

    def __init__(self, path: str, expected: str, actual: str) -> None:
        super().__init__(
            f"{path}: SHA-256 mismatch: expected {expected}, got {actual}; "
            "the partial download was deleted, run the download again"
        )
        self.path = path
        self.expected = expected
        self.actual = actual
