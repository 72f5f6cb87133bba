"""Echo: a WebSocket that sends back every message, and a small page to try it in a browser.

    python -m asgi_lab asgi asgi_lab.apps.echo:app --port 8000
    # then open http://127.0.0.1:8000/ , or connect any WebSocket client to ws://127.0.0.1:8000/

`app` echoes text as text and bytes as bytes, on any path, until the client closes. Plain
HTTP requests get the page. The tests and `benchmarks/ws_echo.py` use this app.
"""

PAGE = b"""<!doctype html>
<meta charset="utf-8">
<title>asgi_lab echo</title>
<h1>WebSocket echo</h1>
<p><input id="text" value="Hello, WebSocket!"> <button id="send">send</button></p>
<pre id="log"></pre>
<script>
  const log = (line) => { document.getElementById("log").textContent += line + "\\n"; };
  const ws = new WebSocket(location.href.replace(/^http/, "ws"));
  ws.onopen = () => log("open");
  ws.onmessage = (event) => log("< " + event.data);
  ws.onclose = (event) => log("closed with code " + event.code);
  document.getElementById("send").onclick = () => {
    const text = document.getElementById("text").value;
    log("> " + text);
    ws.send(text);
  };
</script>
"""
PAGE_HEADERS = [(b"content-type", b"text/html; charset=utf-8"),
                (b"content-length", str(len(PAGE)).encode("ascii"))]


async def app(scope, receive, send):
    """ASGI: WebSocket echo on any path; HTTP gets the page; lifespan is not needed."""
    if scope["type"] == "websocket":
        await websocket_echo(receive, send)
    elif scope["type"] == "http":
        await send({"type": "http.response.start", "status": 200, "headers": PAGE_HEADERS})
        await send({"type": "http.response.body", "body": PAGE})


async def websocket_echo(receive, send):
    """Accept, then send back each websocket.receive until websocket.disconnect."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] != "websocket.receive":
            return  # websocket.disconnect: the client is gone, nothing more to send
        text = message.get("text")
        reply = {"type": "websocket.send", "text": text} if text is not None else \
            {"type": "websocket.send", "bytes": message.get("bytes") or b""}
        try:
            await send(reply)
        except OSError:  # the client vanished meanwhile (www spec 2.4: send() should raise; ours does)
            return
