#!/usr/bin/env python3
# fbcnn-plugins: JPEG artifact removal with FBCNN for GIMP 3.
#
# This file runs inside GIMP's own Python, which has PyGObject but neither
# torch nor numpy.  It only moves pixels: GEGL buffers are read as float
# bytes, sent through a pipe to a worker process of the fbcnn-plugins
# environment (recorded by `fbcnn install-gimp` in fbcnn-worker.json beside
# this file), and the restored bytes are written back through the shadow
# buffer, so GIMP itself applies the selection mask and records one undo step.

import json
import os
import sys

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("GimpUi", "3.0")
gi.require_version("Gegl", "0.4")
from gi.repository import Gegl, Gimp, GimpUi, GLib, GObject  # noqa: E402

from fbcnn_protocol import WorkerClient, WorkerError, WorkerGone, worker_command  # noqa: E402

PROCEDURE = "python-fu-fbcnn-jpeg-artifacts"
HERE = os.path.dirname(os.path.abspath(__file__))
SETTINGS = os.path.join(HERE, "fbcnn-worker.json")
#: Pixels of context read around a selection so the network sees the blocks at its edge whole.
CONTEXT = 32
GRID = 8
DEVICES = (("auto", "Automatic (GPU when available)"), ("cpu", "CPU"), ("cuda", "GPU (CUDA)"), ("mps", "GPU (Apple MPS)"))
SOURCES = {
    "header": "from the JPEG file's quantization tables",
    "predicted": "predicted by the network",
    "dominant": "read from the pixels' JPEG grid (FBCNN-D)",
    "given": "as set",
}


def _registered_models():
    try:
        with open(SETTINGS, encoding="utf-8") as handle:
            return list(json.load(handle).get("models", []))
    except (OSError, ValueError):
        return []


def _babl_format(drawable):
    base = "Y'" if drawable.is_gray() else "R'G'B'"
    alpha = "A" if drawable.has_alpha() else ""
    channels = (1 if drawable.is_gray() else 3) + (1 if alpha else 0)
    return f"{base}{alpha} float", channels


def _region(drawable):
    """The rectangle to restore in drawable coordinates, or None when the selection misses it.

    With a selection, only its bounds plus some context are processed (GIMP blends the result
    through the selection mask when the shadow buffer is merged).  The origin stays on the
    drawable's 8x8 grid so the network sees JPEG blocks where they are.
    """
    width, height = drawable.get_width(), drawable.get_height()
    image = drawable.get_image()
    if Gimp.Selection.is_empty(image):
        return 0, 0, width, height
    inside, x, y, w, h = drawable.mask_intersect()
    if not inside or w <= 0 or h <= 0:
        return None
    left = max(0, (x - CONTEXT) // GRID * GRID)
    top = max(0, (y - CONTEXT) // GRID * GRID)
    right = min(width, x + w + CONTEXT)
    bottom = min(height, y + h + CONTEXT)
    return left, top, right - left, bottom - top


def _read(drawable, rect):
    fmt, channels = _babl_format(drawable)
    x, y, w, h = rect
    data = drawable.get_buffer().get(Gegl.Rectangle.new(x, y, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    return bytes(data), fmt, channels


def _write(drawable, rect, fmt, data):
    x, y, w, h = rect
    shadow = drawable.get_shadow_buffer()
    shadow.set(Gegl.Rectangle.new(x, y, w, h), fmt, data)
    shadow.flush()
    drawable.merge_shadow(True)
    drawable.update(x, y, w, h)


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


def _pixel_request(op, drawable, rect, config, image):
    data, fmt, channels = _read(drawable, rect)
    header = {
        "op": op, "width": rect[2], "height": rect[3], "channels": channels,
        "model": config.get_property("model"), "device": config.get_property("device"),
        "tile": config.get_property("tile-size"), "self_ensemble": config.get_property("self-ensemble"),
    }
    if _covers_image(drawable, image):
        # Only the layer the JPEG loader made (image-sized, at the origin) carries the file's
        # compression; a pasted or scaled layer does not.
        header.update(jpeg_path=_jpeg_path(image), jpeg_settings=_jpeg_settings(image),
                      image_size=[image.get_width(), image.get_height()])
    return header, data, fmt


def _covers_image(drawable, image):
    _, x, y = drawable.get_offsets()
    size = (drawable.get_width(), drawable.get_height())
    return (x, y) == (0, 0) and size == (image.get_width(), image.get_height())


def _describe(estimate):
    text = SOURCES.get(estimate["source"], estimate["source"])
    if estimate["source"] == "dominant" and estimate.get("double_compressed") and estimate.get("shift"):
        text += f", compressed twice: the stronger one, on grid shift {estimate['shift'][0]},{estimate['shift'][1]}"
    if estimate["source"] != "predicted" and estimate.get("predicted") is not None:
        text += f"; the network predicts {estimate['predicted']:.0f}"
    return f"Estimated JPEG quality: {estimate['value']} ({text})"


class FbcnnJpegArtifacts(Gimp.PlugIn):
    def do_query_procedures(self):
        return [PROCEDURE]

    def do_set_i18n(self, name):
        return False

    def do_create_procedure(self, name):
        procedure = Gimp.ImageProcedure.new(self, name, Gimp.PDBProcType.PLUGIN, self.run, None)
        procedure.set_image_types("RGB*, GRAY*")
        procedure.set_sensitivity_mask(
            Gimp.ProcedureSensitivityMask.DRAWABLE | Gimp.ProcedureSensitivityMask.DRAWABLES
        )
        procedure.set_menu_label("JPEG Artifacts Removal (FBCNN)...")
        procedure.add_menu_path("<Image>/Filters/Enhance")
        procedure.set_documentation(
            "Remove JPEG compression artifacts with FBCNN",
            "Removes blocking and ringing left by JPEG compression with the FBCNN network "
            "(Jiang et al., ICCV 2021). The network estimates the JPEG quality factor; a lower "
            "quality factor removes more artifacts, a higher one keeps more detail. Works on the "
            "selection when there is one, and on every selected layer.",
            name,
        )
        procedure.set_attribution("fbcnn-plugins", "fbcnn-plugins contributors", "2026")

        procedure.add_boolean_argument(
            "automatic-qf", "_Automatic quality", "Use the estimated JPEG quality factor", True,
            GObject.ParamFlags.READWRITE,
        )
        procedure.add_int_argument(
            "qf", "_Quality factor", "JPEG quality to undo: lower removes more artifacts, higher keeps detail",
            1, 100, 50, GObject.ParamFlags.READWRITE,
        )
        models = Gimp.Choice.new()
        models.add("auto", 0, "Bundled (color or gray by image type)", "")
        for index, model in enumerate(_registered_models(), start=1):
            models.add(model, index, model, "")
        procedure.add_choice_argument("model", "_Model", "Restoration model", models, "auto",
                                      GObject.ParamFlags.READWRITE)
        devices = Gimp.Choice.new()
        for index, (nick, label) in enumerate(DEVICES):
            devices.add(nick, index, label, "")
        procedure.add_choice_argument("device", "_Device", "Where the network runs", devices, "auto",
                                      GObject.ParamFlags.READWRITE)
        procedure.add_int_argument(
            "tile-size", "_Tile size", "Tile edge in pixels, a multiple of 8 (0: automatic); smaller uses less memory",
            0, 8192, 0, GObject.ParamFlags.READWRITE,
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
        tile = config.get_property("tile-size")
        if tile % GRID or (tile and tile < 64):
            return _failure(procedure, f"Tile size {tile} must be 0 (automatic) or a multiple of 8 of at least 64.")
        Gimp.progress_init("Starting the FBCNN worker")
        try:
            with WorkerClient(worker_command(SETTINGS)) as worker:
                if run_mode == Gimp.RunMode.INTERACTIVE:
                    estimate = self.estimate(worker, image, drawables[0], config)
                    _report({"estimate": estimate})
                    if not self.dialog(procedure, config, estimate):
                        return procedure.new_return_values(Gimp.PDBStatusType.CANCEL, GLib.Error())
                self.restore(worker, image, drawables, config)
        except (WorkerGone, WorkerError) as error:
            return _failure(procedure, f"JPEG artifact removal failed: {error}")
        except Exception as error:  # a GEGL/GLib failure or a bug: a message in GIMP, never a crashed plug-in
            return _failure(procedure, f"JPEG artifact removal failed ({type(error).__name__}): {error}")
        if run_mode == Gimp.RunMode.INTERACTIVE:
            Gimp.displays_flush()
        return procedure.new_return_values(Gimp.PDBStatusType.SUCCESS, GLib.Error())

    def estimate(self, worker, image, drawable, config):
        """The QF "Automatic" will use for the first drawable: estimated on the very pixels it restores."""
        Gimp.progress_set_text("Estimating the JPEG quality")
        rect = _region(drawable) or (0, 0, drawable.get_width(), drawable.get_height())
        header, data, _ = _pixel_request("estimate", drawable, rect, config, image)
        return worker.request(header, data)[0]["qf"]

    def dialog(self, procedure, config, estimate):
        GimpUi.init(PROCEDURE)
        if config.get_property("automatic-qf"):
            config.set_property("qf", int(estimate["value"]))
        dialog = GimpUi.ProcedureDialog.new(procedure, config, "JPEG Artifacts Removal (FBCNN)")
        dialog.get_label("estimate-label", _describe(estimate), False, False)
        dialog.set_sensitive("qf", True, config, "automatic-qf", True)
        dialog.get_label("advanced-title", "Advanced", False, False)
        dialog.fill_box("advanced-box", ["self-ensemble", "device", "tile-size"])
        dialog.fill_expander("advanced", "advanced-title", False, "advanced-box")
        dialog.fill(["estimate-label", "automatic-qf", "qf", "model", "advanced"])
        if os.environ.get("FBCNN_GIMP_TEST_PRESS_OK"):  # lets the test suite drive the real dialog
            GLib.timeout_add(int(os.environ["FBCNN_GIMP_TEST_PRESS_OK"]), _press_ok, dialog)
        accepted = dialog.run()
        dialog.destroy()
        if accepted and config.get_property("automatic-qf"):
            config.set_property("qf", int(estimate["value"]))
        return accepted

    def restore(self, worker, image, drawables, config):
        automatic = config.get_property("automatic-qf")
        qf = "auto" if automatic else config.get_property("qf")
        image.undo_group_start()
        try:
            for index, drawable in enumerate(drawables):
                rect = _region(drawable)
                if rect is None:
                    continue
                Gimp.progress_set_text(f"Removing JPEG artifacts ({drawable.get_name()})")
                header, data, fmt = _pixel_request("restore", drawable, rect, config, image)
                header["qf"] = qf
                share = 1.0 / len(drawables)

                def progress(fraction, index=index, share=share):
                    Gimp.progress_update(min(1.0, (index + fraction) * share))

                reply, restored = worker.request(header, data, progress)
                _write(drawable, rect, fmt, restored)
                _report({"drawable": drawable.get_name(), "rect": list(rect), "qf": reply["qf"]})
        finally:
            image.undo_group_end()
        Gimp.progress_update(1.0)


def _press_ok(dialog):
    from gi.repository import Gtk

    dialog.response(Gtk.ResponseType.OK)
    return False


def _report(entry):
    """Appends what was done to $FBCNN_GIMP_REPORT (a JSON-lines file) when the caller asked for it."""
    path = os.environ.get("FBCNN_GIMP_REPORT")
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(entry) + "\n")


def _failure(procedure, message):
    return procedure.new_return_values(Gimp.PDBStatusType.EXECUTION_ERROR, GLib.Error.new_literal(
        GLib.quark_from_string("fbcnn-plugins"), message, 0))


Gimp.main(FbcnnJpegArtifacts.__gtype__, sys.argv)
