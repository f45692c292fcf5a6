"""Attach over a websocket with a real websocket client (websocket-client, the library docker-py
uses for attach_socket(ws=True); docker-py itself only builds ws:// URLs for TCP hosts, so the
client is connected over the Unix socket directly): output arrives as binary messages, input
reaches the container's stdin."""
from __future__ import annotations

import socket
import time

import websocket

from tests.support.daemon import Daemon


def test_websocket_attach_streams_output_and_takes_stdin(shared_daemon: Daemon) -> None:
    client = shared_daemon.client()
    client.images.pull("busybox", tag="latest")  # docker-py does not pull on create, unlike the CLI
    c = client.containers.create("busybox", ["sh", "-c", "read line; echo got:$line; echo bye"],
                                 stdin_open=True, name=f"ws-attach-{time.monotonic_ns()}")
    try:
        raw = socket.socket(socket.AF_UNIX)
        raw.connect(str(shared_daemon.socket))
        ws = websocket.create_connection(
            f"ws://localhost/v1.41/containers/{c.id}/attach/ws?stdin=1&stdout=1&stderr=1&stream=1",
            socket=raw, timeout=20)
        c.start()
        ws.send("hello\n")
        received = b""
        deadline = time.monotonic() + 20
        while b"bye" not in received and time.monotonic() < deadline:
            opcode, data = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                break
            assert opcode == websocket.ABNF.OPCODE_BINARY  # API >= 1.28: binary frames, as moby
            received += data
        assert b"got:hello" in received and b"bye" in received
        assert c.wait(timeout=20)["StatusCode"] == 0
        ws.close()
    finally:
        c.remove(force=True)
        client.close()
