"""Exercise 5 and a spot-the-bug: a WebSocket chat (ASGI www spec, "WebSocket")."""

from __future__ import annotations

import asyncio
import time

from ...background import server_errors
from .. import client
from ..feedback import fail, passed, register
from ..harness import AppTimeout, ASGIDriver, describe_exception, run, websocket_scope
from .common import describe_log, require_callable, serve


# == 5. A WebSocket chat ===========================================================================

CHAT = "WebSocket chat"
register(
    CHAT, "check_chat",
    concept="a chat room is state shared by every connection: each handler must reach every "
            "other client. A client belongs in the room from the moment its websocket.accept has "
            "gone out until it disconnects, however it leaves.",
    api="keep every client's send function in a module-level set; on each websocket.receive, "
        "await member({'type': 'websocket.send', 'text': ...}) for every member; a try/finally "
        "around the receive loop is where a client leaves.",
    code="await send({'type': 'websocket.accept'}); room.add(send); try: (loop: on "
         "websocket.receive, for member in list(room): await member({...})) finally: "
         "room.discard(send)")
REGISTERED_TOO_EARLY = ("Bob's connection was being accepted when Alice spoke, and your chat sent "
                        "him her message before his websocket.accept was done: it registered him "
                        "before accepting. (A real server refuses that send, and a client that is "
                        "then rejected stays in the room.)")


def check_chat(app) -> None:
    """Exercise 5: a chat room. Accept each client; every text message a client sends goes
    to every client connected (the sender too); a client that leaves is no longer sent to."""
    require_callable(CHAT, app)
    hint_register = ("add the client to the room only after `await send({'type': "
                     "'websocket.accept'})` has returned")
    concept_register = ("until its websocket.accept has gone out, a connection is still an HTTP "
                        "request: nothing may be sent to it, and the app may yet reject it.")

    async def scenario():
        drivers = []

        def connect(port: int, send_hook=None) -> ASGIDriver:
            driver = ASGIDriver(app, websocket_scope("/chat", client=("127.0.0.1", port)),
                                send_hook=send_hook).start()
            drivers.append(driver)
            return driver

        async def expect(driver: ASGIDriver, who: str, text: str, context: str):
            try:
                message = await driver.receive_output(1.0)
            except AppTimeout:
                message = "timeout"
            for other in drivers:
                if other.problems and "not accepted yet" in other.problems[0]:
                    fail(CHAT, REGISTERED_TOO_EARLY, hint_register, concept=concept_register)
                if other.problems:
                    fail(CHAT, other.problems[0],
                         "when a client leaves (websocket.disconnect), remove it from the room")
            for other in drivers:
                if other.error is not None:
                    fail(CHAT, f"your app raised {describe_exception(other.error)}.")
            if message == "timeout":
                fail(CHAT, f"{context}, {who} waited 1 s for {text!r} and got nothing.",
                     "send each message to every client in the room, the sender too")
            if message is None:
                fail(CHAT, f"{context}, {who}'s handler returned; it should keep receiving.")
            if message.get("type") != "websocket.send" or message.get("text") != text:
                fail(CHAT, f"{context}, {who} got {message!r}; expected the text {text!r}.")

        try:
            alice = connect(50001)
            await alice.send_input({"type": "websocket.connect"})
            try:
                first = await alice.receive_output(1.0)
            except AppTimeout:
                first = "timeout"
            if alice.problems:
                fail(CHAT, alice.problems[0], "accept first: await send({'type': 'websocket.accept'})")
            if first == "timeout" or first is None or first.get("type") != "websocket.accept":
                error = f" (your app raised {describe_exception(alice.error)})" if alice.error else ""
                fail(CHAT, f"after websocket.connect your app sent {first!r}{error}; expected "
                           "websocket.accept.", "await send({'type': 'websocket.accept'})")

            # Bob's accept takes a while to reach him (a real server's send() may wait for the
            # network). Until it has, nothing may be sent to him.
            accept_sent = asyncio.Event()

            async def slow_accept(message):
                if message["type"] == "websocket.accept":
                    await accept_sent.wait()

            bob = connect(50002, slow_accept)
            await bob.send_input({"type": "websocket.connect"})
            await asyncio.sleep(0.05)
            await alice.send_input({"type": "websocket.receive", "text": "hi from Alice"})
            await expect(alice, "Alice", "hi from Alice", "Alice sent 'hi from Alice'")
            await asyncio.sleep(0.05)
            if bob.problems:
                fail(CHAT, REGISTERED_TOO_EARLY, hint_register, concept=concept_register)
            accept_sent.set()
            accept = await bob.receive_output(1.0)
            if accept is None or accept.get("type") != "websocket.accept":
                fail(CHAT, f"Bob got {accept!r} first; expected websocket.accept.")

            await bob.send_input({"type": "websocket.receive", "text": "hello from Bob"})
            await expect(alice, "Alice", "hello from Bob", "Bob sent 'hello from Bob'")
            await expect(bob, "Bob", "hello from Bob", "Bob sent 'hello from Bob'")

            await bob.send_input({"type": "websocket.disconnect", "code": 1001})
            bob.disconnect()
            if not await bob.wait(1.0):
                fail(CHAT, "Bob left (websocket.disconnect) and his handler kept running for 1 s.",
                     "when receive() returns websocket.disconnect, remove the client and return")
            await alice.send_input({"type": "websocket.receive", "text": "bye"})
            await expect(alice, "Alice", "bye", "after Bob left, Alice sent 'bye'")
            await asyncio.sleep(0.02)
            if bob.problems:
                fail(CHAT, bob.problems[0], "remove the client from the room when it disconnects "
                                            "(a try/finally around the receive loop is the safe way)")
            await alice.send_input({"type": "websocket.disconnect", "code": 1000})
            alice.disconnect()
            await alice.wait(1.0)
        finally:
            for driver in drivers:
                driver.disconnect()
                await driver.stop()

    run(scenario)
    with server_errors() as errors, serve(app, "chat") as server:
        alice = client.WebSocketClient(server.address, "/chat")
        bob = client.WebSocketClient(server.address, "/chat")
        try:
            time.sleep(0.1)  # both handlers have passed their accept and joined the room
            alice.send_text("over the wire")
            got_alice, got_bob = alice.receive(1, 2.0), bob.receive(1, 2.0)
        finally:
            alice.close()
            bob.close()
    if got_alice[-1:] != ["over the wire"] or got_bob[-1:] != ["over the wire"]:
        fail(CHAT, f"over real sockets, Alice sent 'over the wire'; Alice got {got_alice!r} "
                   f"and Bob got {got_bob!r}. {describe_log(errors)}")
    passed(CHAT, "two clients in process (accept first, broadcast, leaving), and two real "
                 "WebSocket clients over loopback on our server.")
