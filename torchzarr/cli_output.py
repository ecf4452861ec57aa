"""Where the ``torchzarr`` command writes: standard output and error, whose reader may close
them early (``| head -1``) and whose encoding may not hold every character printed; and
how it shows a warning: one line, as it prints its errors."""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from torchzarr.core.printable import printable

__all__ = ["Output", "ReaderGone", "discard_output", "in_command_words", "warnings_as_lines"]

#: the box-drawing characters of ``tree``, and their ASCII forms (``tree --charset=ascii``'s)
_BOX, _ASCII = "├└─│", "|`-|"
_ASCII_TREE = str.maketrans(_BOX, _ASCII)
#: the Python API's advice on remote stores, and the command line's: it has no
#: storage_options, and the SDKs read their settings from the environment
_REMOTE_ADVICE = (
    (
        "(pass credentials in storage_options or set them in the environment)",
        "(set credentials in the environment: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
        "for s3://, GOOGLE_APPLICATION_CREDENTIALS for gs://, AZURE_STORAGE_CONNECTION_STRING "
        "or AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY for az://)",
    ),
    (
        "(create it first, or check the URL and the endpoint in storage_options)",
        "(create it first, or check the URL and the endpoint: AWS_ENDPOINT_URL for s3://, "
        "STORAGE_EMULATOR_HOST for gs://, AZURE_STORAGE_CONNECTION_STRING for az://)",
    ),
)


class ReaderGone(Exception):
    """The reader of standard output or error closed it (``torchzarr info x | head -1``)."""


class Output:
    """A standard stream, whose reader going away raises :class:`ReaderGone` (no error of
    the command: a store's broken connection still is one), and that writes what its
    encoding cannot hold as it can: ``tree``'s lines in ASCII, other characters escaped.
    A stream that is None (the command started with it closed: ``>&-``) has no reader.

    Example:
        >>> import io
        >>> stream = io.TextIOWrapper(io.BytesIO(), encoding="ascii")
        >>> _ = Output(stream).write("└── x\\n")
        >>> stream.flush(); stream.buffer.getvalue()
        b'`-- x\\n'
    """

    def __init__(self, stream: TextIO | None) -> None:
        self._stream = stream
        self.gone = False

    def write(self, text: str) -> Any:
        try:
            return self._call("write", text)
        except UnicodeEncodeError:  # nothing written: the text is encoded first
            return self._call("write", _encodable(text, getattr(self._stream, "encoding", None)))

    def flush(self) -> None:
        self._call("flush")

    def discard(self) -> None:
        """Point the stream's file descriptor at the null device, if its reader went away:
        the interpreter's flush at the exit then does not report the closed pipe again
        (Python's documentation: "Note on SIGPIPE")."""
        if self.gone and self._stream is not None:
            discard_output(self._stream)

    def _call(self, method: str, *args: Any) -> Any:
        if self._stream is None:  # closed before the command started: sys.stdout is None
            self.gone = True
            raise ReaderGone
        try:
            return getattr(self._stream, method)(*args)
        except BrokenPipeError:
            self.gone = True
            raise ReaderGone from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _encodable(text: str, encoding: str | None) -> str:
    """``text`` as ``encoding`` holds it: box drawing as ASCII, other characters escaped."""
    encoding = encoding or "ascii"
    try:
        _BOX.encode(encoding)
    except UnicodeEncodeError:
        text = text.translate(_ASCII_TREE)
    return text.encode(encoding, errors="backslashreplace").decode(encoding)


def discard_output(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at the null device (where it has one).

    Example:
        >>> import io
        >>> discard_output(io.StringIO())  # no file descriptor: nothing to do
    """
    with contextlib.suppress(OSError, ValueError, AttributeError):
        descriptor = stream.fileno()
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, descriptor)
        finally:
            os.close(null)


def in_command_words(message: str) -> str:
    """``message``, an error of the Python API, with its advice on remote stores in the
    command line's words: the environment variables it takes them from.

    Example:
        >>> said = in_command_words("bucket 'b' does not exist (create it first, or check "
        ...     "the URL and the endpoint in storage_options)")
        >>> said[26:]
        '(create it first, or check the URL and the endpoint: AWS_ENDPOINT_URL for s3://, \
STORAGE_EMULATOR_HOST for gs://, AZURE_STORAGE_CONNECTION_STRING for az://)'
        >>> "AWS_ACCESS_KEY_ID" in in_command_words("NoCredentialsError: Unable to locate "
        ...     "credentials (pass credentials in storage_options or set them in the environment)")
        True
    """
    for python, command in _REMOTE_ADVICE:
        message = message.replace(python, command)
    return message


@contextlib.contextmanager
def warnings_as_lines(command: str, reword: Callable[[str], str] | None = None) -> Iterator[None]:
    """Show each warning given meanwhile as one line of standard error, as the command
    prints its errors (``torchzarr rechunk: warning: ...``), in the command's words
    (``reword``), and once: not Python's two lines naming the source line that warned, for
    each place that gave it. The warning filters decide, as before, what is shown.

    Example:
        >>> import contextlib, io
        >>> with contextlib.redirect_stderr(io.StringIO()) as err:
        ...     with warnings_as_lines("demo", str.upper):
        ...         for _ in range(2):
        ...             warnings.warn("pass x=", stacklevel=1)
        >>> err.getvalue()
        'torchzarr demo: warning: PASS X=\\n'
    """
    shown: set[str] = set()

    def show(message: Warning | str, *_: Any, **__: Any) -> None:
        text = str(message) if reword is None else reword(str(message))
        if text not in shown:
            shown.add(text)
            print(printable(f"torchzarr {command}: warning: {text}"), file=sys.stderr)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
