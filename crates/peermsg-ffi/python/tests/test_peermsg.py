"""peermsg from Python against a real relay: two users exchange a command, a buffer and a
file; a send is cancelled; bad calls raise the SDK's error numbers."""

import hashlib
import os
import queue
import threading
import time

import pytest

import peermsg


class Inbox:
    """What a user's callbacks heard, to wait on."""

    def __init__(self):
        self.items = queue.Queue()
        self.states = []

    def client(self):
        return peermsg.Client(
            on_cmd=lambda sender, data: self.items.put(("cmd", sender, data)),
            on_buffer=lambda sender, data: self.items.put(("buffer", sender, data)),
            on_file=lambda sender, path, name: self.items.put(("file", sender, path, name)),
            on_state=lambda state, code: self.states.append((state, code)),
            on_peer_key=lambda user, key, status: self.items.put(("key", user, key, status)))

    def next(self, timeout=20):
        return self.items.get(timeout=timeout)

    def first_state(self, timeout=20):
        """The first state told: it comes on the callback thread, maybe after login returned."""
        deadline = time.monotonic() + timeout
        while not self.states and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.states[:1]


def test_two_python_users_exchange_a_command_a_buffer_and_a_file(relay, tmp_path):
    alice_heard, bob_heard = Inbox(), Inbox()
    with alice_heard.client() as alice, bob_heard.client() as bob:
        alice.login(relay, "alice")
        bob.login(relay, "bob", files_dir=str(tmp_path / "bob"))
        assert alice_heard.first_state() == [(peermsg.STATE_CONNECTED, peermsg.NOERR)]

        send = alice.send_cmd("bob", b"hello from python", cookie=5)
        assert send.result(timeout=20) == peermsg.NOERR
        assert bob_heard.next() == ("cmd", "alice", b"hello from python")

        data = os.urandom(3 * 1024 * 1024 + 1)
        send = alice.send_buffer("bob", data)
        assert send.result(timeout=20) == peermsg.NOERR
        assert bob_heard.next() == ("buffer", "alice", data)

        path = tmp_path / "report.bin"
        content = os.urandom(5 * 1024 * 1024 + 3)
        path.write_bytes(content)
        send = alice.send_file("bob", path, cookie=9)
        assert send.result(timeout=30) == peermsg.NOERR
        assert send.progress == (len(content), len(content))
        kind, sender, kept, name = bob_heard.next()
        assert (kind, sender, name) == ("file", "alice", "report.bin")
        with open(kept, "rb") as f:
            assert hashlib.sha256(f.read()).digest() == hashlib.sha256(content).digest()

        # And back: bob to alice.
        assert bob.send_cmd("alice", b"thanks").result(timeout=20) == peermsg.NOERR
        assert alice_heard.next() == ("cmd", "bob", b"thanks")


def test_sealed_users_exchange_what_the_relay_cannot_read_and_refuse_the_clear(relay):
    alice_heard, bob_heard, carol_heard = Inbox(), Inbox(), Inbox()
    alice_secret, bob_secret = os.urandom(32), os.urandom(32)
    with alice_heard.client() as alice, bob_heard.client() as bob, carol_heard.client() as carol:
        alice.set_sealing(alice_secret)
        bob.set_sealing(bob_secret)
        alice.login(relay, "py-alice")
        bob.login(relay, "py-bob")
        carol.login(relay, "py-carol")

        assert alice.send_cmd("py-bob", b"sealed hello").result(timeout=20) == peermsg.NOERR
        # alice learned bob's key on first use; bob learned alice's from her message.
        assert alice_heard.next() == ("key", "py-bob", peermsg.identity_of(bob_secret),
                                      peermsg.KEY_LEARNED)
        assert bob_heard.next() == ("key", "py-alice", peermsg.identity_of(alice_secret),
                                    peermsg.KEY_LEARNED)
        assert bob_heard.next() == ("cmd", "py-alice", b"sealed hello")
        data = os.urandom(1024 * 1024)
        send = bob.send_buffer("py-alice", data)
        assert send.result(timeout=20) == peermsg.NOERR
        assert send.progress == (len(data), len(data))
        assert alice_heard.next() == ("buffer", "py-bob", data)

        # A user in the clear is refused by a sealing one.
        assert carol.send_cmd("py-bob", b"clear").result(timeout=20) == peermsg.SEAL_REQUIRED
        with pytest.raises(ValueError):
            alice.pin_key("py-bob", b"short")


def test_a_cancelled_send_ends_cancelled(relay):
    bob_heard = Inbox()
    with peermsg.Client() as alice, bob_heard.client() as bob:
        alice.login(relay, "alice2")
        bob.login(relay, "bob2")
        send = alice.send_buffer("bob2", b"x" * (64 * 1024 * 1024))
        alice.cancel_send(send.id)
        assert send.result(timeout=20) == peermsg.CANCELLED
        with pytest.raises(peermsg.PeerMsgError) as refused:
            alice.cancel_send(send.id)
        assert refused.value.name == "TRANSID_INVALID"


def test_bad_calls_raise_the_sdk_error_numbers(relay, tmp_path):
    with peermsg.Client() as alice:
        with pytest.raises(peermsg.PeerMsgError) as e:
            alice.send_cmd("bob", b"too early")
        assert e.value.name == "NOT_LOGIN"
        with pytest.raises(peermsg.PeerMsgError) as e:
            alice.login("127.0.0.1:1", "alice3")
        assert e.value.name == "CONNECTIONLOST"
        alice.login(relay, "alice3")
        with pytest.raises(peermsg.PeerMsgError) as e:
            alice.send_cmd("", b"to nobody")
        assert e.value.name == "PARAM_ERR"
        with pytest.raises(peermsg.PeerMsgError) as e:
            alice.send_file("bob", tmp_path / "missing")
        assert e.value.name == "FILE_NOT_EXIST"
        with pytest.raises(peermsg.PeerMsgError) as e:
            alice.login(relay, "alice3")
        assert e.value.name == "PARAM_ERR"


def test_callbacks_come_on_one_thread_of_the_library(relay):
    threads = set()
    bob = peermsg.Client(on_cmd=lambda sender, data: threads.add(threading.current_thread().ident))
    with peermsg.Client() as alice, bob:
        alice.login(relay, "alice4")
        bob.login(relay, "bob4")
        for i in range(20):
            assert alice.send_cmd("bob4", b"%d" % i).result(timeout=20) == peermsg.NOERR
    assert len(threads) == 1
    assert threading.main_thread().ident not in threads
