#!/usr/bin/env python3
# fbcnn-plugins: JPEG artifact removal with FBCNN for GIMP 3.
#
# This file runs inside GIMP's own Python, which has PyGObject but neither
# torch nor numpy.  It only moves pixels: GEGL buffers are read as float
# bytes, sent through a pipe to a worker process of the fbcnn-plugins
# environment (recorded by `fbcnn install-gimp` in fbcnn-worker.json beside
# this file), and the restored bytes are written back through the shadow
# buffer, so GIMP itself applies the selection mask and records one undo step.
#
# In the dialog the worker runs on a background thread: the dialog opens at
# once, the JPEG quality estimate fills in as it arrives (the header's QF
# first, then the check of the pixels), and the preview is restored without
# blocking the controls.

import gc
import json
import os
import sys
import threading
import time

STARTED = time.monotonic()  # the plug-in process starts when the user picks the filter

import gi  # noqa: E402

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Gtk", "3.0")
gi.require_version("Gdk", "3.0")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject, Gtk  # noqa: E402

from fbcnn_protocol import WorkerClient, WorkerError, WorkerGone, worker_command  # noqa: E402

PROCEDURE = "python-fu-fbcnn-jpeg-artifacts"
HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = os.path.join(HERE, "fbcnn-worker.json")
#: Pixels of context read around a selection or a preview view, so the network sees the blocks at its edge whole.
CONTEXT = 32
GRID = 8
DEVICE_LABELS = {"cpu": "CPU", "cuda": "GPU (CUDA)", "mps": "GPU (Apple MPS)"}
TILE_SIZES = (("auto", "Automatic"), ("256", "256 px"), ("512", "512 px"), ("1024", "1024 px"))
SOURCES = {
    "header": "from the JPEG file's quantization tables",
    "predicted": "predicted by the network",
    "dominant": "read from the pixels' JPEG grid (FBCNN-D)",
    "given": "as set",
    "clean": "the image looks never compressed, so it is barely changed",
}
#: Milliseconds of quiet after a change before the preview is requested (a dragged slider sends many).
PREVIEW_DELAY = 150
#: Rows read at a time for the estimate; the dialog handles its events between strips.
ESTIMATE_STRIP = 256
#: Lines of text the status under the preview has room for, whatever it says.
STATUS_LINES = 4
#: Milliseconds after the final estimate's arrival at which the test hook saves the screen.
ESTIMATE_WATCH = (50, 150, 300, 600, 1000)


def _settings():
    try:
        with open(SETTINGS, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError):
        return {}


def _babl_format(drawable):
    base = "Y'" if drawable.is_gray() else "R'G'B'"
    alpha = "A" if drawable.has_alpha() else ""
    channels = (1 if drawable.is_gray() else 3) + (1 if alpha else 0)
    return f"{base}{alpha} float", channels


def _grid_region(drawable, x, y, w, h):
    """``(x, y, w, h)`` grown by CONTEXT on every side, origin on the drawable's 8x8 grid, clipped."""
    width, height = drawable.get_width(), drawable.get_height()
    left = max(0, (x - CONTEXT) // GRID * GRID)
    top = max(0, (y - CONTEXT) // GRID * GRID)
    right = min(width, x + w + CONTEXT)
    bottom = min(height, y + h + CONTEXT)
    return left, top, right - left, bottom - top


def _region(drawable):
    """The rectangle to restore in drawable coordinates, or None when the selection misses it.

    With a selection, only its bounds plus some context are processed (GIMP blends the result
    through the selection mask when the shadow buffer is merged).  The origin stays on the
    drawable's 8x8 grid so the network sees JPEG blocks where they are.
    """
    if Gimp.Selection.is_empty(drawable.get_image()):
        return 0, 0, drawable.get_width(), drawable.get_height()
    inside, x, y, w, h = drawable.mask_intersect()
    if not inside or w <= 0 or h <= 0:
        return None
    return _grid_region(drawable, x, y, w, h)


def _read(drawable, rect):
    fmt, channels = _babl_format(drawable)
    x, y, w, h = rect
    data = drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    return bytes(data), fmt, channels


def _write_shadow(drawable, rect, fmt, data):
    """Puts the restored pixels in the drawable's shadow buffer; merge_shadow applies them (with the selection)."""
    x, y, w, h = rect
    shadow = drawable.get_shadow_buffer()
    shadow.set(Gegl.Rectangle.new(x, y, w, h), fmt, data)
    shadow.flush()


def _jpeg_path(image):
    """The file the image was opened from, when GIMP knows it (interactive opens; scripts leave it unset)."""
    for getter in ("get_imported_file", "get_file"):
        source = getattr(image, getter, lambda: None)()
        if source is not None and source.get_path():
            return source.get_path()
    return None


def _jpeg_settings(image):
    """The bytes of the "jpeg-settings" parasite GIMP's JPEG loader attaches (quality, tables)."""
    parasite = image.get_parasite("jpeg-settings")
    return list(bytes(parasite.get_data())) if parasite is not None else None


def _covers_image(drawable, image):
    _, x, y = drawable.get_offsets()
    size = (drawable.get_width(), drawable.get_height())
    return (x, y) == (0, 0) and size == (image.get_width(), image.get_height())


def _network_options(config):
    tile = config.get_property("tile-size")
    return {
        "model": config.get_property("model"), "device": config.get_property("device"),
        "tile": 0 if tile == "auto" else int(tile), "self_ensemble": config.get_property("self-ensemble"),
    }


def _shown(wanted):
    """The part of a preview's settings the test hook and the report name: where it is, QF and split."""
    return {key: wanted[key] for key in ("view", "region", "qf", "split")}


def _file_hints(drawable, image):
    # Only the layer the JPEG loader made (image-sized, at the origin) carries the file's
    # compression; a pasted or scaled layer does not.
    if not _covers_image(drawable, image):
        return {}
    return {"jpeg_path": _jpeg_path(image), "jpeg_settings": _jpeg_settings(image),
            "image_size": [image.get_width(), image.get_height()]}


def _pixel_request(op, drawable, rect, config, image):
    data, fmt, channels = _read(drawable, rect)
    header = {"op": op, "width": rect[2], "height": rect[3], "channels": channels, **_network_options(config)}
    header.update(_file_hints(drawable, image))
    return header, data, fmt


def _describe(estimate):
    text = SOURCES.get(estimate["source"], estimate["source"])
    if estimate["source"] == "dominant" and estimate.get("double_compressed") and estimate.get("shift"):
        text += f", compressed twice: the stronger one, on grid shift {estimate['shift'][0]},{estimate['shift'][1]}"
    if estimate["source"] != "predicted" and estimate.get("predicted") is not None:
        text += f"; the network predicts {estimate['predicted']:.0f}"
    return f"Estimated JPEG quality: {estimate['value']} ({text})"


class BackgroundWorker:
    """The worker process driven from a thread, so GIMP's dialog never waits on it.

    Requests run one at a time in the order given, except previews: a preview goes ahead
    of the requests waiting, and a newer one replaces one still waiting, so after a slider
    is dragged only the last position is restored.  Results come back on GIMP's main loop
    (``GLib.idle_add``), the only place GIMP and GTK may be called from; once the dialog is
    closed nothing more is posted there, so no callback can reach libgimp after the run.
    """

    def __init__(self, command):
        self._command = command
        self._jobs = []
        self._wake = threading.Condition()
        self._stopping = False
        self._killed = False
        self.client = None
        self.error = None
        self._thread = threading.Thread(target=self._serve, name="fbcnn-worker", daemon=True)
        self._thread.start()

    def submit(self, kind, header, payload, on_result, on_error, on_stage=None):
        job = (kind, header, payload, on_result, on_error, on_stage)
        with self._wake:
            if kind == "preview":  # the one thing the user is looking at goes first
                self._jobs = [job, *(queued for queued in self._jobs if queued[0] != "preview")]
            else:
                self._jobs.append(job)
            self._wake.notify()

    def _post(self, callback, *args):
        with self._wake:
            if not self._stopping and callback is not None:
                GLib.idle_add(callback, *args)

    def _serve(self):
        try:
            client = WorkerClient(self._command)
        except WorkerGone as error:
            self.error = error
        else:
            with self._wake:
                self.client = client
                if self._stopping and self._killed:
                    client.kill()
        while True:
            with self._wake:
                while not self._jobs and not self._stopping:
                    self._wake.wait()
                if self._stopping:
                    return
                _, header, payload, on_result, on_error, on_stage = self._jobs.pop(0)
            if self.error is not None:
                self._post(on_error, self.error)
                continue
            try:
                reply, data = self.client.request(header, payload,
                                                  stage=lambda text: self._post(on_stage, text))
            except (WorkerGone, WorkerError) as error:
                if isinstance(error, WorkerGone):
                    self.error = error
                self._post(on_error, error)
            else:
                self._post(on_result, reply, data)

    def _stop(self, kill):
        with self._wake:
            self._jobs.clear()
            self._stopping = True
            self._killed = kill
            if kill and self.client is not None:
                self.client.kill()  # a request in flight ends now instead of running to its end
            self._wake.notify()
        self._thread.join()

    def finish(self):
        """Drops the requests not yet started, waits for the running one; the client is the caller's now."""
        self._stop(kill=False)
        if self.error is not None:
            if self.client is not None:
                self.client.close()
            raise self.error
        return self.client

    def cancel(self):
        """The user cancelled: the worker stops at once, whatever it was doing."""
        self._stop(kill=True)
        if self.client is not None:
            self.client.close()


class FilterDialog:
    """The dialog: controls bound to the estimate, and a preview the worker restores.

    The QF field always shows the QF a run would use: with Automatic ticked, the estimate
    (filled in as it arrives); the preview follows the field.
    """

    def __init__(self, procedure, config, image, drawable, worker):
        self.config, self.image, self.drawable, self.worker = config, image, drawable, worker
        self.estimate = None
        self.estimate_final = False
        self.closed = False
        self.preview_serial = 0  # counts the previews asked for; what is drawn carries the count at drawing
        self._awaited_preview = None  # the settings of the preview request in flight
        self._last_preview = None  # (settings, pixels, rowstride) of the last restored preview, drawn again on need
        self._preview_timer = 0
        self._pulse_timer = 0
        self.preview_shown = None  # what the preview shows: view, region, qf, split; read by the test hook
        self.previews_pending = 0
        self.stage = None  # what the worker is busy with and since when, while it has no fraction to show
        self.listeners = []
        self.timings = {}  # seconds from the plug-in's start to each stage; reported for measurements

        GimpUi.init(PROCEDURE)
        self._fit_model_to_image(procedure)
        self.dialog = GimpUi.ProcedureDialog.new(procedure, config, "JPEG Artifacts Removal (FBCNN)")
        self.preview = GimpUi.DrawablePreview.new_from_drawable(drawable)
        self.preview.connect("invalidated", lambda preview: self.schedule_preview())
        self.split = Gtk.CheckButton.new_with_mnemonic("S_plit view (left half unchanged)")
        self.split.connect("toggled", lambda button: self.schedule_preview())
        self.status = Gtk.Label(label="Reading the JPEG quality from the file…", xalign=0.0, yalign=0.0)
        self.status.set_line_wrap(True)
        self.status.set_max_width_chars(48)
        # The status keeps its height whatever it says, and the progress bar its place when done:
        # a change of height would resize the preview, which then shows the unrestored drawable
        # until it is restored again.
        lines = self.status.create_pango_layout("\n".join(["Mg"] * STATUS_LINES))
        self.status.set_size_request(-1, lines.get_pixel_size()[1])
        self.progress = Gtk.ProgressBar(show_text=True, text="Starting the FBCNN worker")
        box = Gtk.Box(orientation=Gtk.Orientation.VERTICAL, spacing=6)
        box.set_border_width(12)
        for widget, expand in ((self.preview, True), (self.split, False), (self.status, False), (self.progress, False)):
            box.pack_start(widget, expand, expand, 0)
        box.show_all()
        self.dialog.get_content_area().pack_start(box, True, True, 0)

        self.dialog.get_widget("qf", GimpUi.SpinScale.__gtype__)
        # Combo boxes, whatever the number of choices: GIMP 3.2 would make short lists radio
        # buttons, whose labels carry no mnemonic.
        for name in ("model", "device", "tile-size"):
            self.dialog.get_widget(name, Gtk.ComboBox.__gtype__)
        self.dialog.set_sensitive("qf", True, config, "automatic-qf", True)
        self.dialog.get_label("advanced-title", "Ad_vanced", False, True)
        self.dialog.fill_box("advanced-box", ["self-ensemble", "device", "tile-size"])
        self.dialog.fill_expander("advanced", "advanced-title", False, "advanced-box")
        self.dialog.fill(["automatic-qf", "qf", "model", "advanced"])
        # The config outlives the dialog (GIMP keeps it until the plug-in quits): close() disconnects these.
        self._config_handlers = [config.connect(f"notify::{name}", self._on_setting_changed)
                                 for name in ("qf", "model", "self-ensemble", "automatic-qf", "device", "tile-size")]
        self._pulse_timer = GLib.timeout_add(120, self._pulse)

    def _fit_model_to_image(self, procedure):
        """Gray models cannot restore colour: they are not offered for an RGB drawable."""
        spec = procedure.find_argument("model")
        choice = self.model_choice = Gimp.param_spec_choice_get_choice(spec) if spec is not None else None
        if self.drawable.is_gray():
            return
        gray = set(_settings().get("gray_models", []))
        if choice is not None and hasattr(choice, "set_sensitive"):
            for name in gray:
                choice.set_sensitive(name, False)
        if self.config.get_property("model") in gray:
            self.config.set_property("model", "auto")

    # -- the estimate ------------------------------------------------------------
    def start_estimate(self):
        """The header's QF first (no pixels, no network), then the core's choice on the pixels."""
        hints = _file_hints(self.drawable, self.image)
        self.worker.submit("header", {"op": "header", **hints}, b"", self._on_header, self._on_error, self._on_stage)
        Gimp.progress_init("Estimating the JPEG quality")

    def _send_pixels_for_estimate(self):
        """Reads the pixels to estimate on in strips, between which the dialog stays live.

        8-bit is enough for the estimate (FBCNN-D works on 8-bit values, as the JPEG was) and a
        quarter of the bytes of float: a 24 MP image is 72 MB to read and send, not 288.
        """
        rect = _region(self.drawable) or (0, 0, self.drawable.get_width(), self.drawable.get_height())
        x, y, width, height = rect
        fmt, channels = _babl_format(self.drawable)
        fmt = fmt.replace(" float", " u8")
        strips, buffer = [], self.drawable.get_buffer()
        Gimp.progress_set_text("Estimating the JPEG quality: reading the pixels")
        for top in range(y, y + height, ESTIMATE_STRIP):
            if self.closed:
                return
            rows = min(ESTIMATE_STRIP, y + height - top)
            strips.append(bytes(buffer.get(Gegl.Rectangle.new(x, top, width, rows), 1.0, fmt,
                                           Gegl.AbyssPolicy.CLAMP)))
            Gimp.progress_update((top + rows - y) / height)
            yield True
        header = {"op": "estimate", "width": width, "height": height, "channels": channels, "format": "u8",
                  **_network_options(self.config), **_file_hints(self.drawable, self.image)}
        self.worker.submit("estimate", header, b"".join(strips), self._on_estimate, self._on_error, self._on_stage)
        Gimp.progress_set_text("Estimating the JPEG quality")

    def _mark(self, stage):
        if stage not in self.timings:
            self.timings[stage] = round(time.monotonic() - STARTED, 3)
            _report({"stage": stage})

    def _on_header(self, reply, data):
        self._mark("header")
        if self.closed or self.estimate_final:
            return False
        if reply.get("qf"):
            self._use_estimate(reply["qf"])
            self.status.set_text(_describe(reply["qf"]) + "\nChecking the pixels…")
        else:
            self.status.set_text("No JPEG quality recorded for this image; estimating it from the pixels…")
        # The preview at the header's QF is asked for before the pixels' check, which takes longer.
        if self._preview_timer:
            GLib.source_remove(self._preview_timer)
        self._request_preview()
        reading = self._send_pixels_for_estimate()
        GLib.idle_add(lambda: next(reading, False))
        return False

    def _on_estimate(self, reply, data):
        if not self.closed:
            self._notify("estimate arriving")
        self.estimate_final = True
        self._mark("estimate")
        if self.closed:  # OK was pressed while it ran: the run uses it, no need to estimate again
            self.estimate = reply["qf"]
            _report({"estimate": reply["qf"]})
            return False
        self._stage_done()
        self._use_estimate(reply["qf"])
        self.status.set_text(_describe(reply["qf"]))
        self.status.set_tooltip_text(reply["qf"].get("reason"))  # the core's full reasoning
        _report({"estimate": reply["qf"]})
        Gimp.progress_end()
        self._notify("estimate")
        return False

    def _use_estimate(self, estimate):
        changed = self.estimate is None or self.estimate["value"] != estimate["value"]
        self.estimate = estimate
        if self.config.get_property("automatic-qf") and self.config.get_property("qf") != estimate["value"]:
            self.config.set_property("qf", int(estimate["value"]))  # notifies, which schedules the preview
        elif changed:
            self.schedule_preview()

    def _on_stage(self, text):
        """The worker said what it is loading (the first request of a run waits for PyTorch and the model)."""
        if not self.closed:
            self.stage = (text, time.monotonic())
            self._show_stage()
        return False

    def _show_stage(self):
        if self.stage is not None:
            text, since = self.stage
            self.progress.set_text(f"{text[:1].upper()}{text[1:]}… {time.monotonic() - since:.0f} s")
        elif not self.estimate_final:
            self.progress.set_text("Checking the pixels")
        else:
            self.progress.set_text("Restoring the preview")

    def _stage_done(self):
        self.stage = None
        if self.estimate_final and not self.previews_pending:
            self.progress.set_fraction(1.0)
            self.progress.set_opacity(0.0)  # hidden, but keeps its place (see __init__)
        else:
            self._show_stage()

    def _pulse(self):
        if self.closed or (self.estimate_final and not self.previews_pending):
            self._pulse_timer = 0
            return False
        self.progress.set_opacity(1.0)
        self.progress.pulse()
        self._show_stage()
        if not self.estimate_final:
            Gimp.progress_pulse()
        return True

    def _on_error(self, error):
        if not self.closed:
            self.stage = None
            self.previews_pending = 0
            self._awaited_preview = None  # a failed preview is asked for again, not awaited for ever
            self.progress.set_opacity(0.0)
            if self._pulse_timer:
                GLib.source_remove(self._pulse_timer)
                self._pulse_timer = 0
            self.status.set_text(f"JPEG artifact removal failed: {error}")
            _report({"error": str(error)})
            self._notify("error")
        return False

    # -- the preview -------------------------------------------------------------
    def _on_setting_changed(self, config, spec):
        if spec.name == "automatic-qf" and config.get_property("automatic-qf") and self.estimate is not None:
            config.set_property("qf", int(self.estimate["value"]))  # ticking Automatic shows what it will use
            return
        self.schedule_preview()

    def schedule_preview(self):
        """Restores the preview after a short pause, so a dragged slider asks only for where it stops.

        The view and settings already restored are drawn again at once from the last result:
        GIMP draws the unrestored drawable into the preview whenever its area is allocated or
        scrolled, and that must not stay on screen, nor cost another restore.
        """
        if self._preview_timer:
            GLib.source_remove(self._preview_timer)
            self._preview_timer = 0
        if not self._redraw_last_preview(self._wanted_preview()):
            self._preview_timer = GLib.timeout_add(PREVIEW_DELAY, self._request_preview)

    def _wanted_preview(self):
        """What the preview should show now (view, region read around it, QF, split, network options), or None."""
        if self.closed or not self.preview.get_update():
            return None
        if self.config.get_property("automatic-qf") and self.estimate is None:
            return None  # drawn when the estimate arrives
        x, y = self.preview.get_position()
        width, height = self.preview.get_size()
        return {"view": [x, y, width, height], "region": list(_grid_region(self.drawable, x, y, width, height)),
                "qf": int(self.config.get_property("qf")), "split": self.split.get_active(),
                "options": _network_options(self.config)}

    def _redraw_last_preview(self, wanted):
        """Draws the last restored preview again when it is what is ``wanted``; says whether it did."""
        if wanted is None or self._last_preview is None or self._last_preview[0] != wanted:
            return False
        self.preview_serial += 1
        self._draw_preview(*self._last_preview)
        return True

    def _request_preview(self):
        self._preview_timer = 0
        wanted = self._wanted_preview()
        if wanted is None or self._redraw_last_preview(wanted):
            return False
        self.preview_serial += 1
        if wanted == self._awaited_preview:
            return False  # the request in flight restores this very view; its result is drawn
        rect = tuple(wanted["region"])
        data, _, channels = _read(self.drawable, rect)
        x, y, width, height = wanted["view"]
        header = {"op": "preview", "width": rect[2], "height": rect[3], "channels": channels, "qf": wanted["qf"],
                  "view": [x - rect[0], y - rect[1], width, height], "split": wanted["split"], **wanted["options"]}
        self._awaited_preview = wanted

        def on_result(reply, pixels):
            if self.closed:
                return False
            self.previews_pending = max(0, self.previews_pending - 1)
            self._stage_done()
            # Only the settings last asked for are drawn: an older view never replaces a newer one.
            if wanted == self._awaited_preview:
                self._awaited_preview = None
                self._last_preview = (wanted, pixels, width * channels)
                self._draw_preview(*self._last_preview)
            return False

        # A newer request replaces one still waiting, so at most the running one and this one are pending.
        self.previews_pending = min(self.previews_pending + 1, 2)
        if not self._pulse_timer:
            self._pulse_timer = GLib.timeout_add(120, self._pulse)
        self.worker.submit("preview", header, data, on_result, self._on_error, self._on_stage)
        _report({"preview asked": _shown(wanted)})
        return False

    def _draw_preview(self, wanted, pixels, rowstride):
        """Shows restored pixels and tells the listeners (the test hook) what is on screen now."""
        self.preview.draw_buffer(pixels, rowstride)
        self._mark("first preview")
        self.preview_shown = {**_shown(wanted), "serial": self.preview_serial}
        _report({"preview": self.preview_shown})
        self._notify("preview")

    def _notify(self, event):
        for listener in list(self.listeners):
            listener(self, event)

    def run(self):
        self.dialog.connect("map-event", lambda *args: self._mark("shown"))
        self.dialog.show()
        self.start_estimate()
        accepted = self.dialog.run()
        _report({"timings": self.timings})
        return accepted

    def close(self):
        """Takes the dialog down while the plug-in still runs, and lets go of every widget.

        GIMP's drawable preview stores its position through the PDB each time it is disposed,
        which its last unref does too.  A widget that outlived the run (kept by a handler on the
        procedure's config, which GIMP frees only as the plug-in quits, or by a reference cycle)
        would make that call after ``Gimp.main`` returned: LibGimp-CRITICAL lines at exit and, at
        times, a crashed plug-in.  So the handlers go, the dialog is destroyed, and the caller
        collects what is left before returning to GIMP.
        """
        self.closed = True
        for timer in (self._preview_timer, self._pulse_timer):
            if timer:
                GLib.source_remove(timer)
        self._preview_timer = self._pulse_timer = 0
        for handler in self._config_handlers:
            self.config.disconnect(handler)
        self._config_handlers = []
        self.listeners.clear()
        self.dialog.destroy()
        self.dialog = self.preview = self.split = self.status = self.progress = None


class FbcnnJpegArtifacts(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        settings = _settings()
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(
            Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
        )
        procedure.set_menu_label("_JPEG Artifacts Removal (FBCNN)...")
        procedure.add_menu_path("<Image>/Filters/Enhance")
        procedure.set_documentation(
            "Remove JPEG compression artifacts with FBCNN",
            "Removes blocking and ringing left by JPEG compression with the FBCNN network "
            "(Jiang et al., ICCV 2021). The JPEG quality factor is read from the file or estimated; "
            "a lower quality factor removes more artifacts, a higher one keeps more detail. Works on "
            "the selection when there is one, and on every selected layer.",
            name,
        )
        procedure.set_attribution("fbcnn-plugins", "fbcnn-plugins contributors", "2026")

        procedure.add_boolean_argument(
            "automatic-qf", "_Automatic quality", "Use the JPEG quality read from the file or estimated", True,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "qf", "_Quality factor", "JPEG quality to undo: lower removes more artifacts, higher keeps detail",
            1, 100, 50, GObject.ParamFlags.READWRITE,
        )
        models = Gimp.Choice.new()
        models.add("auto", 0, "Bundled (color or gray by image type)", "")
        for index, model in enumerate(settings.get("models", []), start=1):
            models.add(model, index, model, "")
        procedure.add_choice_argument("model", "_Model", "Restoration model", models, "auto",
                                      GObject.ParamFlags.READWRITE)
        devices = Gimp.Choice.new()
        devices.add("auto", 0, "Automatic (GPU when available)", "")
        for index, nick in enumerate(settings.get("devices", ["cpu"]), start=1):
            devices.add(nick, index, DEVICE_LABELS.get(nick, nick), "")
        procedure.add_choice_argument("device", "_Device", "Where the network runs", devices, "auto",
                                      GObject.ParamFlags.READWRITE)
        tiles = Gimp.Choice.new()
        for index, (nick, label) in enumerate(TILE_SIZES):
            tiles.add(nick, index, label, "")
        procedure.add_choice_argument(
            "tile-size", "_Tile size", "Edge of the tiles the image is restored in; smaller uses less memory",
            tiles, "auto", GObject.ParamFlags.READWRITE,
        )
        procedure.add_boolean_argument(
            "self-ensemble", "_Best quality (8x slower)",
            "Average the restorations of the 8 flips and rotations: a little more quality for 8 times the time",
            False, GObject.ParamFlags.READWRITE,
        )
        return procedure

    def run(self, procedure, run_mode, image, drawables, config, run_data):
        if not drawables:
            return _failure(procedure, "Select at least one layer or channel to restore.")
        try:
            command = worker_command(SETTINGS)
            if run_mode == Gimp.RunMode.INTERACTIVE:
                accepted, estimate, client = self.show_dialog(procedure, config, image, drawables[0], command)
                if not accepted:
                    return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
                with client:
                    self.restore(client, image, drawables, config, estimate)
            else:
                Gimp.progress_init("Starting the FBCNN worker")
                with WorkerClient(command) as client:
                    self.restore(client, image, drawables, config, None)
        except (WorkerGone, WorkerError) as error:
            return _failure(procedure, f"JPEG artifact removal failed: {error}")
        except Exception as error:  # a GEGL/GLib failure or a bug: a message in GIMP, never a crashed plug-in
            return _failure(procedure, f"JPEG artifact removal failed ({type(error).__name__}): {error}")
        finally:
            gc.collect()  # the dialog's widgets go now, while libgimp can still take their last calls
            RUN_STATE["returned"] = True
        if run_mode == Gimp.RunMode.INTERACTIVE:
            Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    def show_dialog(self, procedure, config, image, drawable, command):
        """Runs the dialog; returns (accepted, the final estimate or None, the worker client when accepted).

        On Cancel the worker is stopped at once.  The dialog is destroyed and lets go of its widgets
        before this returns (see FilterDialog.close); run() collects them before it returns to GIMP.
        """
        called = round(time.monotonic() - STARTED, 3)
        background = BackgroundWorker(command)
        dialog = FilterDialog(procedure, config, image, drawable, background)
        accepted = False
        try:
            dialog.timings["procedure called"] = called
            _install_test_hooks(dialog)
            accepted = dialog.run()
        finally:
            dialog.close()
            if not accepted:
                background.cancel()
        client = None
        if accepted:
            Gimp.progress_init("Starting the FBCNN worker")
            client = background.finish()
        while GLib.MainContext.default().iteration(False):  # results posted before the worker stopped
            pass
        return accepted, dialog.estimate if dialog.estimate_final else None, client

    def restore(self, worker, image, drawables, config, estimate):
        """Restores every drawable; ``estimate`` is the dialog's (the first drawable's) when it finished.

        The results go to the drawables' shadow buffers first, and only when all are there are
        they merged, inside one undo group.  The long part thus leaves the image untouched: a
        Cancel from GIMP's status bar (which kills the plug-in) finds no open undo group and
        nothing changed, and GIMP drops the shadow buffers of a plug-in that died.
        """
        automatic = config.get_property("automatic-qf")
        shadowed = []
        share = 1.0 / len(drawables)
        for index, drawable in enumerate(drawables):
            rect = _region(drawable)
            if rect is None:
                continue
            name = drawable.get_name()
            Gimp.progress_set_text(f"Removing JPEG artifacts ({name})")
            header, data, fmt = _pixel_request("restore", drawable, rect, config, image)
            # The dialog's estimate is for the first drawable: others get their own.
            known = automatic and index == 0 and estimate is not None
            header["qf"] = estimate["value"] if known else ("auto" if automatic else config.get_property("qf"))

            def progress(fraction, index=index, name=name):
                Gimp.progress_update(min(1.0, (index + fraction) * share))
                _report({"progress": fraction, "of": name})

            _report({"restoring": name})
            reply, restored = worker.request(header, data, progress)
            _write_shadow(drawable, rect, fmt, restored)
            shadowed.append((drawable, rect))
            _report({"drawable": name, "rect": list(rect), "qf": estimate if known else reply["qf"]})
        if shadowed:
            image.undo_group_start()
            try:
                for drawable, rect in shadowed:
                    drawable.merge_shadow(True)
                    drawable.update(*rect)
            finally:
                image.undo_group_end()
        Gimp.progress_update(1.0)


def _install_test_hooks(dialog):
    """Lets the test suite drive the real dialog under Xvfb (environment variables; no effect otherwise).

    FBCNN_GIMP_TEST_STEPS is a JSON list of settings to make, as a user would, one at a time:
    each waits until the estimate is final and the preview shows the previous settings
    ("split" is the split-view box, other keys are the procedure's properties).  After every
    step's preview the screen is saved to FBCNN_GIMP_TEST_SCREENSHOT with the step's number
    in the name, with a report of where the preview is and what the dialog shows; after the
    last, OK is pressed (Cancel with FBCNN_GIMP_TEST_FINISH=cancel).

    With FBCNN_GIMP_TEST_WATCH_ESTIMATE=1 the screen is also saved just before the final
    estimate is applied and at ESTIMATE_WATCH milliseconds after ("step" "estimate+N"), so a
    test can see what the preview shows while the estimate arrives.
    """
    steps = os.environ.get("FBCNN_GIMP_TEST_STEPS")
    if not steps:
        return
    state = {"steps": json.loads(steps), "index": -1, "after": None, "busy": False}
    screenshot = os.environ.get("FBCNN_GIMP_TEST_SCREENSHOT")
    watch = screenshot and os.environ.get("FBCNN_GIMP_TEST_WATCH_ESTIMATE") == "1"

    def save_screen(dialog, name):
        if not dialog.closed:
            root, extension = os.path.splitext(screenshot)
            _report({"screen": _screenshot(dialog, f"{root}-{name}{extension}"), "step": name})
        return False

    def listener(dialog, event):
        if event == "error":  # shown in the dialog and reported; a test must not wait for ever
            dialog.dialog.response(Gtk.ResponseType.CANCEL)
            return
        if event == "estimate arriving" and watch:
            save_screen(dialog, "estimate+0")
            for delay in ESTIMATE_WATCH:
                GLib.timeout_add(delay, save_screen, dialog, f"estimate+{delay}")
            return
        shown = dialog.preview_shown
        if state["busy"] or not dialog.estimate_final or shown is None:
            return
        if state["after"] is not None and shown["serial"] <= state["after"]:
            return  # still the preview of the settings before this step
        state["busy"] = True
        # After the estimate, the first step waits for the watch's last screenshot.
        GLib.timeout_add(max(ESTIMATE_WATCH) + 300 if watch and state["index"] < 0 else 500, advance, dialog)

    def advance(dialog):
        if state["index"] >= 0 and screenshot:
            root, extension = os.path.splitext(screenshot)
            _report({"screen": _screenshot(dialog, f"{root}-{state['index']}{extension}"), "step": state["index"]})
        state["index"] += 1
        if state["index"] == len(state["steps"]):
            cancel = os.environ.get("FBCNN_GIMP_TEST_FINISH") == "cancel"
            dialog.dialog.response(Gtk.ResponseType.CANCEL if cancel else Gtk.ResponseType.OK)
            return False
        state["after"] = dialog.preview_serial
        for name, value in state["steps"][state["index"]].items():
            if name == "split":
                dialog.split.set_active(value)
            else:
                dialog.config.set_property(name, value)
        dialog.schedule_preview()
        state["busy"] = False
        return False

    dialog.listeners.append(listener)


def _screenshot(dialog, path):
    """The whole screen, as the X server holds it, and where the preview's pixels and the estimate are."""
    from gi.repository import Gdk

    while Gtk.events_pending():
        Gtk.main_iteration()
    root = Gdk.get_default_root_window()
    shot = Gdk.pixbuf_get_from_window(root, 0, 0, root.get_width(), root.get_height())
    shot.savev(path, "png", [], [])
    area = dialog.preview.get_area()
    toplevel = area.get_toplevel()
    _, origin_x, origin_y = toplevel.get_window().get_origin()
    inside_x, inside_y = area.translate_coordinates(toplevel, 0, 0)
    allocation = area.get_allocation()
    return {"path": path, "area": [origin_x + inside_x, origin_y + inside_y, allocation.width, allocation.height],
            "shown": dialog.preview_shown, "status": dialog.status.get_text(),
            "qf_field": dialog.config.get_property("qf"), "automatic": dialog.config.get_property("automatic-qf"),
            "models_offered": [nick for nick in dialog.model_choice.list_nicks() if dialog.model_choice.is_valid(nick)]}


def _report(entry):
    """Appends what was done to $FBCNN_GIMP_REPORT (a JSON-lines file) when the caller asked for it."""
    path = os.environ.get("FBCNN_GIMP_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def _failure(procedure, message):
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(
        GLib.quark_from_string("fbcnn-plugins"), message, 0))


#: Whether the procedure has returned its values to GIMP (see _quiet_about_closed_connection).
RUN_STATE = {"returned": False}


def _quiet_about_closed_connection(domain, level, message, *user_data):
    """Passes libgimp's warnings on, except one GIMP 3.0 itself causes after a run is over.

    Once a procedure has returned, GIMP 3.0 at times closes its end of the plug-in's pipe before
    libgimp has written its last message as the plug-in quits; libgimp then warns "gimp_flush():
    error: Broken pipe" on GIMP's console (in about one run in fifteen, most after Cancel).  The
    run's result has reached GIMP by then and nothing is lost, so that warning is not shown; any
    other warning, and this one during a run, is.
    """
    if RUN_STATE["returned"] and "Broken pipe" in (message or ""):
        return
    GLib.log_default_handler(domain, level, message, None)


_LOG_HANDLER = GLib.log_set_handler("LibGimp", GLib.LogLevelFlags.LEVEL_WARNING, _quiet_about_closed_connection)
Gimp.main(FbcnnJpegArtifacts.__gtype__, sys.argv)
GLib.log_remove_handler("LibGimp", _LOG_HANDLER)  # no Python callback while the interpreter shuts down
