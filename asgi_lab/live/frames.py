"""WebSocket frames as they are on the wire (RFC 6455 §5.2), decoded by wsproto's own parser.

A WebSocket message travels as one or more frames. Each frame starts with a small header:

     0                   1
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 ...
    +-+-+-+-+-------+-+-------------+-------------------------------+
    |F|R|R|R| opcode|M| Payload len |  extended length, masking key |
    |I|S|S|S|  (4)  |A|     (7)     |  (if any), then the payload   |
    |N|V|V|V|       |S|             |                               |
    +-+-+-+-+-------+-+-------------+-------------------------------+

- FIN: this frame ends a message (a long message may be split into continuation frames);
- opcode: 0x1 text, 0x2 binary, 0x0 continuation, 0x8 close, 0x9 ping, 0xA pong;
- MASK: every frame from a client is masked with a fresh 4-byte key, frames from a server
  never are (§5.3: it stops a browser being used to poison proxy caches);
- payload length: 7 bits, or 126 + 16 bits, or 127 + 64 bits.

`FrameTap` is sans-IO: feed it the bytes one direction of a connection carried, and it gives
back a `WireFrame` per complete frame. The decoding is wsproto's `FrameDecoder`; we only keep
a copy of each header as it is parsed, which wsproto itself has no reason to keep.
"""

from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from wsproto.frame_protocol import FrameDecoder, Opcode, ParseFailed

OPCODE_NAMES = {Opcode.CONTINUATION: "CONT", Opcode.TEXT: "TEXT", Opcode.BINARY: "BINARY",
                Opcode.CLOSE: "CLOSE", Opcode.PING: "PING", Opcode.PONG: "PONG"}


@dataclass(frozen=True, slots=True)
class WireFrame:
    """One frame, exactly as one peer sent it."""

    t: float
    """time.monotonic() when its last byte arrived (or was written)."""
    direction: str
    """"sent" (client to server) or "received" (server to client), from the client's side."""
    fin: bool
    opcode: str
    masked: bool
    mask_key: bytes | None
    length: int
    """The payload length field: bytes of payload in this frame."""
    payload: bytes
    """The payload, unmasked."""
    rsv1: bool = False

    def describe(self, limit: int = 60) -> str:
        """The payload for a human: text, a close code and reason, or hex for binary."""
        if self.opcode == "CLOSE":
            if len(self.payload) >= 2:
                (code,) = struct.unpack("!H", self.payload[:2])
                reason = self.payload[2:].decode("utf-8", "replace")
                return f"code={code}" + (f" reason={reason!r}" if reason else "")
            return "(no code: 1005)"
        if self.opcode in ("TEXT", "CONT", "PING", "PONG"):
            text = self.payload.decode("utf-8", "replace")
            return repr(text if len(text) <= limit else text[:limit] + "...")
        shown = self.payload[: limit // 2].hex(" ")
        return shown + (" ..." if len(self.payload) > limit // 2 else "")


class _HeaderKeepingDecoder(FrameDecoder):
    """wsproto's frame decoder, remembering each header (and masking key) it parses."""

    def __init__(self, client: bool) -> None:
        super().__init__(client=client)
        self.last_header = None
        self.last_mask_key: bytes | None = None

    def parse_header(self) -> bool:
        done = super().parse_header()
        if done:
            self.last_header = self.header
            # wsproto's Header leaves the key out; its masker holds the one just read.
            key = getattr(self.masker, "_masking_key", None)
            self.last_mask_key = bytes(key) if key is not None else None
        return done


class FrameTap:
    """Decode one direction of a WebSocket connection into `WireFrame`s.

    `frames_from_client=True` reads what a client sends (masked frames); False reads what a
    server sends (unmasked). A protocol error stops the tap and is kept in `error`.
    """

    def __init__(self, direction: str, frames_from_client: bool) -> None:
        self.direction = direction
        # wsproto's `client` flag means "I am the client", i.e. "I read the server's frames".
        self.decoder = _HeaderKeepingDecoder(client=not frames_from_client)
        self.error: str | None = None
        self._payload = bytearray()

    def feed(self, data: bytes) -> list[WireFrame]:
        """Bytes in, every frame they complete out (a frame may span several feeds)."""
        if self.error is not None:
            return []
        self.decoder.receive_bytes(data)
        frames = []
        while True:
            try:
                frame = self.decoder.process_buffer()
            except ParseFailed as exc:
                self.error = f"{exc} (close code {int(exc.code)})"
                return frames
            if frame is None:
                return frames
            self._payload += frame.payload  # a long frame arrives in pieces
            if frame.frame_finished:
                frames.append(self._finish())

    def _finish(self) -> WireFrame:
        header = self.decoder.last_header  # the frame just finished is the last one parsed
        payload = bytes(self._payload)
        self._payload.clear()
        return WireFrame(
            t=time.monotonic(), direction=self.direction, fin=header.fin,
            opcode=OPCODE_NAMES.get(header.opcode, hex(header.opcode)),
            masked=self.decoder.last_mask_key is not None, mask_key=self.decoder.last_mask_key,
            length=header.payload_len, payload=payload, rsv1=header.rsv.rsv1,
        )
