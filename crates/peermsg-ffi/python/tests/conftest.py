"""A relay for the tests: the one at PEERMSG_RELAY (the Rust test that runs these starts
one), else a `peermsg relay` process started here (PEERMSG_BIN, or the repository's
target/debug/peermsg)."""

import os
import socket
import subprocess
import time

import pytest


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def relay():
    if os.environ.get("PEERMSG_RELAY"):
        yield os.environ["PEERMSG_RELAY"]
        return
    here = os.path.dirname(os.path.abspath(__file__))
    program = os.environ.get("PEERMSG_BIN") or os.path.join(
        here, "..", "..", "..", "..", "target", "debug", "peermsg")
    addr = f"127.0.0.1:{_free_port()}"
    process = subprocess.Popen([program, "relay", "--listen", addr],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(addr.split(":"), timeout=0.1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield addr
    finally:
        process.terminate()
        process.wait()
