"""The two file-like objects PEP 3333 asks a server to hand its apps.

- `RequestBody` is `wsgi.input` (PEP 3333, "Input and Error Streams"): the request body,
  read on demand with `read()`, `read(n)`, `readline()`, `readlines()` or iteration.
- `FileWrapper` is `wsgi.file_wrapper` (PEP 3333, "Optional Platform-Specific File
  Handling"): turns a file into the iterable an app returns. For a real file it also offers
  the server a `FileRegion`, which the server hands to the operating system (sendfile).

Both are pure: `RequestBody` pulls its bytes from a `read_chunk()` function, so it can be
tested with a list of chunks and no socket at all.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Callable


class RequestBody:
    """`wsgi.input`: the request body, read lazily from the connection.

    `read_chunk()` returns the next piece of the body as h11 decoded it (Content-Length or
    chunked framing already removed), and b"" once the body is over. The stream therefore ends
    exactly where the body ends: no read can swallow the next pipelined request, and an app may
    safely read until b"" even without a CONTENT_LENGTH (`wsgi.input_terminated`).

    Nothing is read from the socket until the app asks, which is also when the server answers
    `Expect: 100-continue`.
    """

    def __init__(self, read_chunk: Callable[[], bytes]) -> None:
        self._read_chunk = read_chunk
        self._buffer = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        """Append the next chunk to the buffer; False once the body is over."""
        if self._eof:
            return False
        chunk = self._read_chunk()
        if not chunk:
            self._eof = True
            return False
        self._buffer += chunk
        return True

    def _take(self, size: int) -> bytes:
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def read(self, size: int | None = -1) -> bytes:
        """Up to `size` bytes (all that is left when size is negative or None); b"" at the end."""
        if size is None or size < 0:
            while self._fill():
                pass
            return self._take(len(self._buffer))
        while len(self._buffer) < size and self._fill():
            pass
        return self._take(size)

    def readline(self, size: int | None = -1) -> bytes:
        """One line, with its b"\\n"; at most `size` bytes when size is given (PEP 3333 allows it)."""
        limit = -1 if size is None else size
        searched = 0
        while True:
            newline = self._buffer.find(b"\n", searched)
            if newline >= 0:
                end = newline + 1
                break
            searched = len(self._buffer)
            if 0 <= limit <= searched or not self._fill():
                end = len(self._buffer)
                break
        return self._take(end if limit < 0 else min(end, limit))

    def readlines(self, hint: int | None = -1) -> list[bytes]:
        """The remaining lines (stop after about `hint` bytes when hint is positive)."""
        lines, total = [], 0
        while line := self.readline():
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                break
        return lines

    def __iter__(self):
        while line := self.readline():
            yield line


class FileWrapper:
    """`wsgi.file_wrapper`: `return environ["wsgi.file_wrapper"](open(path, "rb"))`.

    An iterable of blocks of the file; its `close()` closes the file, and the server always
    calls `close()` on what the app returned, so the file is closed however the response ends
    (the client may leave half-way through). The point of the PEP's wrapper is `region()`:
    a server that recognises it may skip the iteration and let the kernel copy the file.
    """

    def __init__(self, filelike, block_size: int = 64 * 1024) -> None:
        self.filelike = filelike
        self.block_size = block_size

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        data = self.filelike.read(self.block_size)
        if data:
            return data
        raise StopIteration

    def close(self) -> None:
        close = getattr(self.filelike, "close", None)
        if close is not None:
            close()

    def region(self) -> "FileRegion | None":
        """The rest of the file, if it is a regular file opened in binary mode; None for
        anything else (a BytesIO, a pipe, a text file), which the server then iterates."""
        filelike = self.filelike
        if isinstance(filelike, io.TextIOBase):
            return None
        try:
            status = os.fstat(filelike.fileno())
            offset = filelike.tell()
        except (AttributeError, OSError, ValueError):  # no file descriptor behind it
            return None
        if not stat.S_ISREG(status.st_mode):
            return None
        return FileRegion(filelike, offset, max(status.st_size - offset, 0))


class FileRegion:
    """`count` bytes of an open `file` from `offset`: a body the kernel can send by itself.

    h11 frames it like any body (it only needs `len()`), and the server passes it to
    `socket.sendfile()`, which uses os.sendfile where the platform has it: the bytes go from
    the page cache to the socket without ever being copied into Python.
    """

    __slots__ = ("file", "offset", "count")

    def __init__(self, file, offset: int, count: int) -> None:
        self.file, self.offset, self.count = file, offset, count

    def __len__(self) -> int:
        return self.count
