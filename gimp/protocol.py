"""The pipe protocol between the GIMP plug-in and its worker process.

GIMP runs plug-ins with its own Python, which cannot import torch, so the
plug-in starts a worker in the fbcnn-plugins environment and talks to it over
stdin/stdout.  This module is standard library only because the installer
copies it next to the plug-in, where GIMP's Python imports it; the worker
imports the same file as ``fbcnn_plugins.gimp.protocol``.

A message is one line of UTF-8 JSON (the header) followed by exactly
``header["payload"]`` raw bytes.  Pixels travel as little-endian float32,
rows of interleaved channels, so nothing is squeezed through 8 bits and no
file touches the disk.  The worker answers every request with any number of
``{"kind": "progress", "fraction": f}`` messages (or ``"stage": text`` while it
loads PyTorch and the model, which has no fraction) and then one ``"result"``
or ``"error"`` message.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from typing import IO, Any, Callable

PROTOCOL_VERSION = 2
MAX_HEADER_BYTES = 1 << 20


class WorkerError(RuntimeError):
    """The worker ran the request and reported a problem (bad input, unknown model...)."""


class WorkerGone(RuntimeError):
    """The worker could not be started, or stopped before it answered."""


def write_message(stream: IO[bytes], header: dict[str, Any], payload: bytes | memoryview = b"") -> None:
    header = dict(header, payload=len(payload))
    stream.write(json.dumps(header, separators=(",", ":")).encode("utf-8") + b"\n")
    if len(payload):
        stream.write(payload)
    stream.flush()


def read_message(stream: IO[bytes]) -> tuple[dict[str, Any], bytes]:
    """One message; ``EOFError`` when the other side has closed the pipe."""
    line = stream.readline(MAX_HEADER_BYTES)
    if not line:
        raise EOFError("pipe closed")
    if not line.endswith(b"\n"):
        raise ValueError("message header too long or cut off")
    header = json.loads(line.decode("utf-8"))
    size = int(header.get("payload", 0))
    payload = _read_exactly(stream, size)
    return header, payload


def _read_exactly(stream: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError(f"pipe closed {left} bytes before the end of a {size}-byte payload")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


ProgressHandler = Callable[[float], None]
StageHandler = Callable[[str], None]


class WorkerClient:
    """The plug-in's end: starts the worker, sends requests, turns failures into clear exceptions."""

    def __init__(self, command: list[str], *, env: dict[str, str] | None = None) -> None:
        self.command = command
        # stderr goes to a file, not a pipe: a chatty worker can never block on a full pipe,
        # and its last lines explain a crash.
        self._stderr = tempfile.TemporaryFile()
        # Always an environment of our own, never None.  With None, Python 3.13's posix_spawn
        # path hands the C library's ``environ`` to the child and afterwards frees its list unless
        # it is still ``environ``; in the GIMP plug-in the worker starts on a background thread
        # while GTK and libgimp set variables on the main thread, which can swap ``environ`` in
        # that window, and Python then frees the C library's list: "free(): invalid pointer" or
        # "double free", and GIMP reports a crashed plug-in.  A list Python built is always its own.
        try:
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                env=dict(os.environ) if env is None else env, bufsize=0,
            )
        except OSError as error:
            self._stderr.close()
            raise WorkerGone(
                f"could not start the FBCNN worker ({' '.join(command)}): {error.strerror or error}. "
                "Reinstall the plug-in with 'fbcnn install-gimp' from the fbcnn-plugins environment."
            ) from error
        hello = self.request({"op": "hello", "protocol": PROTOCOL_VERSION})[0]
        if hello.get("protocol") != PROTOCOL_VERSION:
            self.close()
            raise WorkerGone(
                f"the FBCNN worker speaks protocol {hello.get('protocol')}, this plug-in {PROTOCOL_VERSION}; "
                "run 'fbcnn install-gimp' again so both come from the same version"
            )
        self.info = hello

    def request(
        self, header: dict[str, Any], payload: bytes | memoryview = b"", progress: ProgressHandler | None = None,
        stage: StageHandler | None = None,
    ) -> tuple[dict[str, Any], bytes]:
        """Sends one request and waits for its answer.

        ``progress`` gets the fraction done of a restoration; ``stage`` what the worker is busy
        with when that takes long and has no fraction (loading the engine, loading the model).
        """
        assert self._process.stdin is not None and self._process.stdout is not None
        try:
            write_message(self._process.stdin, header, payload)
            while True:
                reply, data = read_message(self._process.stdout)
                kind = reply.get("kind")
                if kind == "progress":
                    if stage and reply.get("stage"):
                        stage(str(reply["stage"]))
                    if progress and "fraction" in reply:
                        progress(float(reply["fraction"]))
                elif kind == "error":
                    raise WorkerError(str(reply.get("message", "unknown error")))
                else:
                    return reply, data
        except (EOFError, BrokenPipeError, ValueError) as error:
            raise WorkerGone(self._death_note(error)) from error

    def _death_note(self, error: BaseException) -> str:
        try:
            code = self._process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            code = self._process.wait()
        self._stderr.seek(0)
        lines = self._stderr.read().decode("utf-8", "replace").strip().splitlines()
        tail = "\n".join(lines[-8:]) or "(no output)"
        if any("No module named 'fbcnn_plugins" in line for line in lines):
            return (f"fbcnn-plugins is not installed in the Python the plug-in was set up with ({self.command[0]}); "
                    "run 'fbcnn install-gimp' again from the environment that has fbcnn-plugins")
        return f"the FBCNN worker stopped unexpectedly (exit code {code}, {error}); its last output:\n{tail}"

    def kill(self) -> None:
        """Stops the worker at once, whatever it is doing (the user cancelled); a request in flight fails."""
        if self._process.poll() is None:
            self._process.kill()

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                write_message(self._process.stdin, {"op": "quit"})
                self._process.stdin.close()
                self._process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._process.kill()
                self._process.wait()
        self._stderr.close()

    def __enter__(self) -> "WorkerClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def worker_command(settings_path: str) -> list[str]:
    """The worker's command line, from the JSON the installer wrote next to the plug-in."""
    try:
        with open(settings_path, encoding="utf-8") as handle:
            settings = json.load(handle)
    except (OSError, ValueError) as error:
        raise WorkerGone(
            f"cannot read {settings_path} ({error}); reinstall the plug-in with 'fbcnn install-gimp'"
        ) from error
    python = settings.get("python", "")
    # A prefix such as flatpak-spawn --host: the Python is then a path on the host, not in GIMP's sandbox.
    launcher = [str(part) for part in settings.get("launcher") or []]
    if not python or (not launcher and not os.path.exists(python)):
        raise WorkerGone(
            f"the fbcnn-plugins Python recorded in {settings_path} ({python or 'none'}) does not exist; "
            "reinstall the plug-in with 'fbcnn install-gimp' from the environment that has fbcnn-plugins"
        )
    return [*launcher, python, "-m", "fbcnn_plugins.gimp.worker"]
