"""peermsg from Python, through its C library (libpeermsg_ffi) with ctypes.

The SDK's calls: ``send_cmd``, ``send_buffer``, ``send_file``, ``cancel_send``; its
callbacks as Python callables (``on_cmd``, ``on_buffer``, ``on_file``, ``on_state``,
``on_peer_key``); each send's result and progress on the ``Send`` it returns. With
``set_sealing`` every message is sealed end to end (the relay cannot read it).

    import peermsg

    def on_cmd(sender, data):
        print(sender, data)

    with peermsg.Client(on_cmd=on_cmd) as alice:
        alice.login("127.0.0.1:7000", "alice")
        send = alice.send_cmd("bob", b"hello")
        print(peermsg.error_name(send.result(timeout=10)))

Callbacks run on the library's callback thread, one at a time: keep them short (a slow
callback delays the ones after it, never the network). The library is found at
``PEERMSG_LIB``, else beside this package, else in the repository's ``target`` folder.
"""

import ctypes
import os
import threading
from ctypes import (CFUNCTYPE, POINTER, Structure, byref, c_char_p, c_int32, c_size_t,
                    c_uint8, c_uint64, c_void_p)

__all__ = ["Client", "Send", "PeerMsgError", "error_name", "identity_of", "NOERR", "CANCELLED",
           "SEAL_REQUIRED", "STATE_DISCONNECTED", "STATE_CONNECTED", "STATE_RECONNECTING",
           "KEY_PINNED", "KEY_LEARNED", "KEY_CHANGED", "KEY_UNKNOWN"]

NOERR = 0
CANCELLED = 9000
SEAL_REQUIRED = 9018
STATE_DISCONNECTED, STATE_CONNECTED, STATE_RECONNECTING = 0, 1, 2
# What became of a peer's key (``on_peer_key``'s status): PM_KEY_* in peermsg.h.
KEY_PINNED, KEY_LEARNED, KEY_CHANGED, KEY_UNKNOWN = 0, 1, 2, 3


def _find_library():
    if os.environ.get("PEERMSG_LIB"):
        return os.environ["PEERMSG_LIB"]
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.abspath(os.path.join(here, "..", "..", "..", ".."))
    for path in (os.path.join(here, "libpeermsg_ffi.so"),
                 os.path.join(repo, "target", "release", "libpeermsg_ffi.so"),
                 os.path.join(repo, "target", "debug", "libpeermsg_ffi.so")):
        if os.path.exists(path):
            return path
    raise OSError("libpeermsg_ffi.so not found: build it with `cargo build -p peermsg-ffi` "
                  "or set PEERMSG_LIB")


_STATE = CFUNCTYPE(None, c_void_p, c_int32, c_int32)
_RESULT = CFUNCTYPE(None, c_void_p, c_uint64, c_int32, c_uint64)
_FILE_RESULT = CFUNCTYPE(None, c_void_p, c_uint64, c_char_p, c_int32, c_uint64)
_PROGRESS = CFUNCTYPE(None, c_void_p, c_uint64, c_uint64, c_uint64, c_uint64)
_DATA = CFUNCTYPE(None, c_void_p, c_char_p, POINTER(c_uint8), c_size_t)
_FILE = CFUNCTYPE(None, c_void_p, c_char_p, c_char_p, c_char_p)
_PEER_KEY = CFUNCTYPE(None, c_void_p, c_char_p, POINTER(c_uint8), c_uint64)


class _Callbacks(Structure):
    # The order of pm_callbacks in peermsg.h.
    _fields_ = [("ctx", c_void_p), ("connection_state", _STATE), ("send_cmd_rlst", _RESULT),
                ("send_buffer_rlst", _RESULT), ("send_file_rlst", _FILE_RESULT),
                ("send_progress", _PROGRESS), ("notify_cmd_data", _DATA),
                ("notify_buffer_data", _DATA), ("notify_file_data", _FILE),
                ("peer_key", _PEER_KEY)]


_lib = ctypes.CDLL(_find_library())
_lib.pm_error_name.restype = c_char_p
_lib.pm_error_name.argtypes = [c_int32]
_lib.pm_client_new.argtypes = [POINTER(c_void_p)]
_lib.pm_set_callbacks.argtypes = [c_void_p, POINTER(_Callbacks)]
_lib.pm_login.argtypes = [c_void_p, c_char_p, c_char_p, c_char_p, c_char_p]
_lib.pm_set_trust.argtypes = [c_void_p, c_char_p, c_char_p]
_lib.pm_set_sealing.argtypes = [c_void_p, c_char_p, c_int32]
_lib.pm_pin_key.argtypes = [c_void_p, c_char_p, c_char_p]
_lib.pm_identity_of.argtypes = [c_char_p, c_char_p]
_lib.pm_logout.argtypes = [c_void_p]
_lib.pm_client_free.argtypes = [c_void_p]
_lib.pm_send_cmd.argtypes = [c_void_p, c_char_p, c_char_p, c_size_t, c_uint64, POINTER(c_uint64)]
_lib.pm_send_buffer.argtypes = _lib.pm_send_cmd.argtypes
_lib.pm_send_file.argtypes = [c_void_p, c_char_p, c_char_p, c_uint64, POINTER(c_uint64)]
_lib.pm_cancel_send.argtypes = [c_void_p, c_uint64, c_uint64]
for _f in ("pm_client_new", "pm_set_callbacks", "pm_set_trust", "pm_set_sealing", "pm_pin_key",
           "pm_identity_of", "pm_login", "pm_logout", "pm_client_free", "pm_send_cmd",
           "pm_send_buffer", "pm_send_file", "pm_cancel_send"):
    getattr(_lib, _f).restype = c_int32


def error_name(code):
    """The name of an SDK error number ("NOERR", "OFFLINE", ...)."""
    return _lib.pm_error_name(code).decode()


def _key32(key, what):
    key = bytes(key)
    if len(key) != 32:
        raise ValueError(f"{what} is 32 bytes, not {len(key)}")
    return key


def identity_of(secret):
    """The identity key (32 bytes) of a 32-byte secret: what peers pin, and what a person
    compares."""
    out = ctypes.create_string_buffer(32)
    _check("pm_identity_of", _lib.pm_identity_of(_key32(secret, "a secret"), out))
    return out.raw


class PeerMsgError(Exception):
    """A call refused with an SDK error number (``code``; its name in ``name``)."""

    def __init__(self, call, code):
        self.code, self.name = code, error_name(code)
        super().__init__(f"{call}: {code} {self.name}")


def _check(call, code):
    if code != NOERR:
        raise PeerMsgError(call, code)


def _text(s):
    return s.encode() if isinstance(s, str) else s


class Send:
    """One send: its ``id``, its ``progress`` (bytes taken, total) and, once over, its
    result (``NOERR`` once the receiving application has it)."""

    def __init__(self, send_id, cookie):
        self.id, self.cookie = send_id, cookie
        self.progress = (0, 0)
        self.code = None
        self._done = threading.Event()

    def result(self, timeout=None):
        """Waits for the send's result and returns it (an SDK error number)."""
        if not self._done.wait(timeout):
            raise TimeoutError(f"send {self.id}: no result within {timeout} s")
        return self.code

    def _finish(self, code):
        self.code = code
        self._done.set()


class Client:
    """One user's client. Callbacks (any may be None) run on the library's callback thread:
    ``on_cmd(sender, data)``, ``on_buffer(sender, data)``, ``on_file(sender, tmp_file,
    name)`` (the file is yours: move it), ``on_state(state, code)``, ``on_peer_key(user,
    key, status)`` (with sealing: ``key`` 32 bytes or None, ``status`` a ``KEY_*``; keep a
    ``KEY_LEARNED`` key and pin it next time)."""

    def __init__(self, on_cmd=None, on_buffer=None, on_file=None, on_state=None,
                 on_peer_key=None):
        self._on = (on_cmd, on_buffer, on_file, on_state, on_peer_key)
        self._lock = threading.Lock()
        self._sends = {}
        self._early = {}  # results that came before their send's id was returned
        handle = c_void_p()
        _check("pm_client_new", _lib.pm_client_new(byref(handle)))
        self._handle = handle
        # Kept alive as long as the client: the library calls them.
        self._callbacks = _Callbacks(
            None, _STATE(self._state), _RESULT(self._result), _RESULT(self._result),
            _FILE_RESULT(lambda ctx, i, name, code, cookie: self._result(ctx, i, code, cookie)),
            _PROGRESS(self._progress), _DATA(self._cmd), _DATA(self._buffer), _FILE(self._file),
            _PEER_KEY(self._peer_key))
        _check("pm_set_callbacks", _lib.pm_set_callbacks(self._handle, byref(self._callbacks)))

    def set_trust(self, ca_file=None, pin=None):
        """Which relay certificate TLS trusts for the next login: signed by an authority in
        the PEM file ``ca_file``, or exactly the one with SHA-256 fingerprint ``pin``
        (either asks for TLS); neither: the web's authorities."""
        _check("pm_set_trust", _lib.pm_set_trust(self._handle, _text(ca_file), _text(pin)))

    def set_sealing(self, secret, trust_first_use=True):
        """Seals every message end to end from the next login: this user's identity is the
        32-byte ``secret`` (random, made once, kept private; ``identity_of`` gives its key);
        messages go sealed to their receivers and must come sealed. With
        ``trust_first_use`` a peer's key seen first is pinned (``on_peer_key``,
        ``KEY_LEARNED``). ``secret`` None: no sealing."""
        secret = None if secret is None else _key32(secret, "a secret")
        _check("pm_set_sealing", _lib.pm_set_sealing(self._handle, secret, int(trust_first_use)))

    def pin_key(self, user, key):
        """Trusts ``key`` (32 bytes) as ``user``'s identity key from the next login (after
        ``set_sealing``)."""
        _check("pm_pin_key", _lib.pm_pin_key(self._handle, _text(user), _key32(key, "a key")))

    def login(self, server, user, token=None, files_dir=None):
        """Connects to the relay at ``server`` and logs in as ``user``; waits for the
        answer. ``server`` is "tls://host:port", "tcp://host:port" or "host:port" (TLS
        unless loopback). Raises PeerMsgError if refused or unreachable."""
        _check("pm_login", _lib.pm_login(self._handle, _text(server), _text(user),
                                         _text(token), _text(files_dir)))

    def send_cmd(self, to, data, cookie=0):
        """``sendCmd``: returns the Send; its result comes once (no progress, no cancel)."""
        return self._send("pm_send_cmd", _lib.pm_send_cmd, to, data, cookie)

    def send_buffer(self, to, data, cookie=0):
        """``sendBuffer``: returns the Send, with progress; cancellable."""
        return self._send("pm_send_buffer", _lib.pm_send_buffer, to, data, cookie)

    def send_file(self, to, path, cookie=0):
        """``sendFile``: the file at ``path``, under its own name; returns the Send."""
        send_id = c_uint64()
        code = _lib.pm_send_file(self._handle, _text(to), _text(os.fspath(path)), cookie,
                                 byref(send_id))
        return self._started("pm_send_file", code, send_id.value, cookie)

    def cancel_send(self, send_id, cookie=0):
        """``cancelSend``: the send's result then says CANCELLED. Raises PeerMsgError
        (TRANSID_INVALID) for a command or a send already over."""
        _check("pm_cancel_send", _lib.pm_cancel_send(self._handle, send_id, cookie))

    def logout(self):
        """Closes the connection; pending sends end with CONNECTIONLOST."""
        _check("pm_logout", _lib.pm_logout(self._handle))

    def close(self):
        """Closes the connection and frees the client (waits for callbacks still due)."""
        if self._handle:
            _check("pm_client_free", _lib.pm_client_free(self._handle))
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _send(self, call, fn, to, data, cookie):
        data = bytes(data)
        send_id = c_uint64()
        code = fn(self._handle, _text(to), data, len(data), cookie, byref(send_id))
        return self._started(call, code, send_id.value, cookie)

    def _started(self, call, code, send_id, cookie):
        _check(call, code)
        send = Send(send_id, cookie)
        with self._lock:
            early = self._early.pop(send_id, None)
            if early is None:
                self._sends[send_id] = send
        if early is not None:
            send._finish(early)
        return send

    # The library's callbacks.
    def _state(self, ctx, state, code):
        if self._on[3]:
            self._on[3](state, code)

    def _result(self, ctx, send_id, code, cookie):
        with self._lock:
            send = self._sends.pop(send_id, None)
            if send is None:
                self._early[send_id] = code
        if send is not None:
            send._finish(code)

    def _progress(self, ctx, send_id, sent, total, cookie):
        with self._lock:
            send = self._sends.get(send_id)
        if send is not None:
            send.progress = (sent, total)

    def _cmd(self, ctx, sender, data, length):
        if self._on[0]:
            self._on[0](sender.decode(), ctypes.string_at(data, length))

    def _buffer(self, ctx, sender, data, length):
        if self._on[1]:
            self._on[1](sender.decode(), ctypes.string_at(data, length))

    def _file(self, ctx, sender, tmp_file, name):
        if self._on[2]:
            self._on[2](sender.decode(), tmp_file.decode(), name.decode())

    def _peer_key(self, ctx, user, key, status):
        if self._on[4]:
            self._on[4](user.decode(), ctypes.string_at(key, 32) if key else None, status)
