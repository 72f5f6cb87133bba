"""Live WebSocket demos: a client that shows its frames, and the notebook pieces built on it.

- `frames.py`: `WireFrame` and `FrameTap`, RFC 6455 frames decoded from the bytes on the wire;
- `client.py`: `WebSocketClient`, wsproto over asyncio, recording every frame and event;
- `chat_client.py`: `ChatClient`, a blocking facade for cells and widget callbacks, on a
  loop thread of its own;
- `widgets.py`: the chat box, the frame inspector and the close button (ipywidgets), each
  with a plain-text rendering for a notebook run without a front end (nbval);
- `wsgi_try.py`: the same chat tried on WSGI servers (ours, wsgiref, werkzeug, waitress,
  gunicorn), what the client sees on each, and what our non-portable escape hatch costs;
- `public_url.py`: the address a link or IFrame must show so that the reader's browser
  reaches a server of the notebook: 127.0.0.1 on a laptop, the Jupyter server's proxy
  route on JupyterHub, Binder or a Codespace;
- `split_chat.py`: the chat split over a WSGI app and a separate WebSocket server, two
  processes, started and stopped together.
"""

from .chat_client import ChatClient, LoopThread, client_loop
from .client import ClientEvent, HandshakeRejected, WebSocketClient
from .frames import FrameTap, WireFrame

__all__ = ["ChatClient", "ClientEvent", "FrameTap", "HandshakeRejected", "LoopThread",
           "WebSocketClient", "WireFrame", "client_loop"]
