"""The worker process the GIMP plug-in talks to: the core engine behind a pipe.

Started by the plug-in as ``python -m fbcnn_plugins.gimp.worker`` with the
interpreter recorded at install time.  It reads requests from stdin and
answers on stdout (see :mod:`fbcnn_plugins.gimp.protocol`); everything
else a library prints goes to stderr, so stray output can never corrupt the
pipe.  Restorers are kept between requests, so a dialog's estimate and the
restoration that follows load the model once.
"""

from __future__ import annotations

import os
import select
import sys
import threading
import time
from typing import IO, Any

import numpy as np

from fbcnn_plugins.gimp.protocol import PROTOCOL_VERSION, read_message, write_message

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


#: Pixel formats a request may use: float32 (what is restored) or 8-bit (enough to estimate the QF of
#: a large image, at a quarter of the bytes to read and send).
PIXEL_FORMATS = {"float": np.dtype("<f4"), "u8": np.dtype(np.uint8)}


def pixels_from(header: dict[str, Any], payload: bytes) -> np.ndarray:
    """The request's HxWxC pixels (float32, or uint8 with ``"format": "u8"``), checked against the sizes it announced."""
    try:
        width, height, channels = int(header["width"]), int(header["height"]), int(header["channels"])
    except (KeyError, TypeError, ValueError):
        raise ValueError("request lacks integer width, height and channels") from None
    if width < 1 or height < 1 or channels not in (1, 2, 3, 4):
        raise ValueError(f"bad pixel block {width}x{height}x{channels}")
    dtype = PIXEL_FORMATS.get(header.get("format", "float"))
    if dtype is None:
        raise ValueError(f"unknown pixel format {header.get('format')!r}; use {' or '.join(PIXEL_FORMATS)}")
    expected = width * height * channels * dtype.itemsize
    if len(payload) != expected:
        raise ValueError(f"pixel block of {width}x{height}x{channels} needs {expected} bytes, got {len(payload)}")
    return np.frombuffer(payload, dtype=dtype).reshape(height, width, channels)


def file_hints(header: dict[str, Any]) -> dict[str, Any]:
    """The header QF of the JPEG file behind the image, for ``choose_qf``.

    The plug-in sends a region (a selection's bounds), so the file is matched against the whole
    image's size.  The file on disk wins when it is there: it proves the image still has the
    file's size (GIMP keeps the "jpeg-settings" parasite through a scale or crop); without it,
    the parasite is what is left.
    """
    from fbcnn_plugins.core.qf_choice import header_estimate
    from fbcnn_plugins.gimp.jpeg_settings import header_from_jpeg_settings

    path, size = header.get("jpeg_path"), header.get("image_size")
    if size is None:
        return {"header": None}
    if path and os.path.isfile(path):
        return {"header": header_estimate(path, height=int(size[1]), width=int(size[0]))}
    return {"header": header_from_jpeg_settings(header.get("jpeg_settings"))}


def eight_bit(pixels: np.ndarray) -> np.ndarray:
    """Float pixels in 0..1 as the 8-bit values GIMP's preview area draws (rounded, clipped)."""
    return np.clip(np.rint(np.asarray(pixels, np.float32) * 255.0), 0, 255).astype(np.uint8)


class Worker:
    def __init__(self) -> None:
        self._restorers: dict[tuple, Any] = {}

    def restorer(self, header: dict[str, Any], send=None):
        """The restorer the request asks for, built on first use (``send`` tells the client what loads)."""
        announce = send or (lambda message: None)
        if "fbcnn_plugins.core.restorer" not in sys.modules:  # the first request of a run: seconds of imports
            announce({"kind": "progress", "stage": "loading the engine"})
        from fbcnn_plugins.core.restorer import Restorer

        model = header.get("model") or None
        model = None if model == "auto" else model
        device = header.get("device") or "auto"
        if device not in DEVICE_CHOICES:
            raise ValueError(f"unknown device {device!r}; choose one of {', '.join(DEVICE_CHOICES)}")
        tile = int(header.get("tile") or 0) or None  # None: the core's default for the device
        ensemble = header.get("self_ensemble", False)
        if not isinstance(ensemble, bool):
            raise ValueError(f"self_ensemble must be true or false, got {ensemble!r}")
        key = (model, device, tile)
        if key not in self._restorers:
            announce({"kind": "progress", "stage": "loading the model"})
            self._restorers[key] = Restorer(model, device=device, tile=tile)
            announce({"kind": "progress", "stage": "restoring"})
        restorer = self._restorers[key]
        restorer.self_ensemble = ensemble  # a per-request choice: one network in memory serves both
        return restorer

    def hello(self, header: dict[str, Any], payload: bytes, send) -> tuple[dict, bytes]:
        # No torch here: the dialog waits for this answer before it can show the header's QF.
        from fbcnn_plugins import __version__

        return {"protocol": PROTOCOL_VERSION, "version": __version__}, b""

    def header(self, header: dict[str, Any], payload: bytes, send) -> tuple[dict, bytes]:
        """The QF GIMP's "jpeg-settings" parasite records, at once (no pixels, no network).

        What the dialog shows while the pixels are checked; the estimate that follows may
        overrule it (for instance when the image was scaled since it was opened).
        """
        from fbcnn_plugins.gimp.jpeg_settings import header_from_jpeg_settings

        found = header_from_jpeg_settings(header.get("jpeg_settings"))
        return {"qf": found.to_dict() if found is not None else None}, b""

    def estimate(self, header: dict[str, Any], payload: bytes, send) -> tuple[dict, bytes]:
        from fbcnn_plugins.core.qf_choice import choose_qf

        image = pixels_from(header, payload)
        chosen = choose_qf(self.restorer(header, send), image, **file_hints(header))
        return {"qf": chosen.to_dict()}, b""

    def restore(self, header: dict[str, Any], payload: bytes, send) -> tuple[dict, bytes]:
        from fbcnn_plugins.core.qf_choice import choose_qf
        from fbcnn_plugins.core.quality import parse_qf

        image = pixels_from(header, payload)
        restorer = self.restorer(header, send)
        qf = parse_qf(header.get("qf"))
        chosen = None
        if qf == "auto":
            chosen = choose_qf(restorer, image, **file_hints(header))
            qf = chosen.value
        elif not isinstance(qf, int):
            raise ValueError(f"qf must be 'auto' or 1..100 here, got {qf!r}")

        def progress(done: int, total: int) -> None:
            send({"kind": "progress", "fraction": done / max(total, 1)})

        if chosen is not None:  # the core carries out auto's decision (a clean image is left as it is)
            from fbcnn_plugins.core.qf_choice import restore_at

            result = restore_at(restorer, image, chosen, progress=progress)
        else:
            result = restorer.restore(image, qf, progress=progress)
        used = chosen or result.qf
        return {"qf": used.to_dict()}, np.ascontiguousarray(result.image, dtype="<f4").tobytes()

    def preview(self, header: dict[str, Any], payload: bytes, send) -> tuple[dict, bytes]:
        """The dialog's preview: restore a region at a given QF, crop it to the view, as 8-bit.

        The region carries some context around the view (so blocks at the view's edge are
        restored as in the full run); the reply is what the preview area draws, rows of
        8-bit pixels with the request's channels.  With ``split``, the view's left half keeps
        the input, like the split view of GIMP's own filters.
        """
        image = pixels_from(header, payload)
        qf = header.get("qf")
        if isinstance(qf, bool) or not isinstance(qf, int) or not 1 <= qf <= 100:
            raise ValueError(f"a preview needs a qf in 1..100, got {qf!r}")
        try:
            left, top, width, height = (int(v) for v in header["view"])
        except (KeyError, TypeError, ValueError):
            raise ValueError("a preview needs view = [x, y, width, height] inside the region") from None
        if left < 0 or top < 0 or width < 1 or height < 1 or left + width > image.shape[1] or top + height > image.shape[0]:
            raise ValueError(f"view {[left, top, width, height]} lies outside the {image.shape[1]}x{image.shape[0]} region")
        restored = self.restorer(header, send).restore(image, qf).image[top : top + height, left : left + width]
        if header.get("split"):
            restored = restored.copy()
            restored[:, : width // 2] = image[top : top + height, left : left + width // 2]
        return {"view": [left, top, width, height]}, eight_bit(restored).tobytes()

    def serve(self, requests: IO[bytes], replies: IO[bytes]) -> None:
        def send(header: dict[str, Any], payload: bytes = b"") -> None:
            write_message(replies, header, payload)

        handlers = {"hello": self.hello, "header": self.header, "estimate": self.estimate,
                    "restore": self.restore, "preview": self.preview}
        while True:
            try:
                header, payload = read_message(requests)
            except EOFError:
                return
            op = header.get("op")
            if op == "quit":
                return
            handler = handlers.get(op)
            try:
                if handler is None:
                    raise ValueError(f"unknown request {op!r}")
                reply, data = handler(header, payload, send)
            except Exception as error:  # every failure goes back as a message; the worker stays up
                send({"kind": "error", "message": str(error) or type(error).__name__})
                continue
            send(dict(reply, kind="result"), data)


def exit_when_orphaned(requests: IO[bytes]) -> None:
    """Ends this process as soon as the client that started it is gone.

    GIMP kills a plug-in outright when the user cancels it from the status bar; the worker
    would otherwise finish restoring an image nobody waits for.  The pipe's write end closing
    (POLLHUP) while this process has been handed to another parent means the client died; a
    client that merely closed the pipe gets the normal ending (end of input) instead.
    """
    parent = os.getppid()

    def watch() -> None:
        poller = select.poll()
        poller.register(requests.fileno(), select.POLLHUP)
        while True:
            if any(event & (select.POLLHUP | select.POLLERR) for _, event in poller.poll()):
                while os.getppid() == parent:
                    time.sleep(0.5)
                os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def main() -> None:
    # Keep the real stdout for the protocol and point fd 1 at stderr, so prints from any library
    # (Python or C) cannot slip bytes into the pipe.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if hasattr(select, "poll"):
        exit_when_orphaned(sys.stdin.buffer)
    Worker().serve(sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
