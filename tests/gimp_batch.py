# Runs inside a real GIMP 3 (python-fu-eval batch interpreter) for the integration tests.
#
# The job is described by the JSON file named in $FBCNN_GIMP_JOB; pixels are dumped
# as .npy files (float, the plug-in's own babl formats) into the job's folder and a
# result.json tells the test what happened.  Only GIMP's Python and numpy are used.
import json
import os
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
import numpy as np  # noqa: E402
from gi.repository import Gegl, Gimp, Gio  # noqa: E402

PROCEDURE = "python-fu-fbcnn-jpeg-artifacts"


def pixel_format(drawable):
    base = "Y'" if drawable.is_gray() else "R'G'B'"
    alpha = "A" if drawable.has_alpha() else ""
    return base + alpha + " float", (1 if drawable.is_gray() else 3) + (1 if alpha else 0)


def dump(drawable, path):
    fmt, channels = pixel_format(drawable)
    w, h = drawable.get_width(), drawable.get_height()
    data = drawable.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, fmt, Gegl.AbyssPolicy.CLAMP)
    np.save(path, np.frombuffer(bytes(data), dtype=np.float32).reshape(h, w, channels))


def dump_selection(image, path):
    selection = image.get_selection()
    w, h = image.get_width(), image.get_height()
    data = selection.get_buffer().get(Gegl.Rectangle.new(0, 0, w, h), 1.0, "Y float", Gegl.AbyssPolicy.CLAMP)
    np.save(path, np.frombuffer(bytes(data), dtype=np.float32).reshape(h, w))


def registration(procedure):
    """What GIMP shows for the procedure: the menu label and the choices of each choice argument."""
    found = {"menu-label": procedure.get_menu_label()}
    for spec in procedure.get_arguments():
        choice = Gimp.param_spec_choice_get_choice(spec) if isinstance(spec, Gimp.ParamChoice) else None
        if choice is not None:
            found[spec.name] = list(choice.list_nicks())
    return found


def open_job(job, folder, result):
    """Opens the dialog on an image and runs nothing else (the dialog's own hooks close it)."""
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["input"]))
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    config = procedure.create_config()
    config.set_property("run-mode", Gimp.RunMode.INTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", image.get_layers())
    outcome = procedure.run(config)
    result["status"] = outcome.index(0).value_nick
    result["success"] = True
    image.delete()


def restore_job(job, folder, result):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["input"]))
    if job.get("precision") == "u16":
        image.convert_precision(Gimp.Precision.U16_NON_LINEAR)
    if job.get("gray"):
        image.convert_grayscale()
    layer = image.get_layers()[0]
    if job.get("alpha_hole"):  # a soft transparent hole, so the alpha channel has many values to keep
        x, y, w, h, feather = job["alpha_hole"]
        layer.add_alpha()
        image.select_ellipse(Gimp.ChannelOps.REPLACE, x, y, w, h)
        Gimp.Selection.feather(image, feather)
        layer.edit_clear()
        Gimp.Selection.none(image)
    if job.get("offset"):
        layer.set_offsets(*job["offset"])
    if job.get("select"):
        x, y, w, h = job["select"]
        image.select_rectangle(Gimp.ChannelOps.REPLACE, x, y, w, h)
        if job.get("feather"):
            Gimp.Selection.feather(image, job["feather"])
        dump_selection(image, os.path.join(folder, "selection.npy"))
    drawables = [layer]
    if job.get("second_layer_offset"):  # a moved copy, so two layers with different content are selected
        second = layer.copy()
        image.insert_layer(second, None, 0)
        second.set_offsets(*job["second_layer_offset"])
        second.transform_flip_simple(Gimp.OrientationType.HORIZONTAL, True, 0.0)
        drawables.append(second)
    dump(layer, os.path.join(folder, "before.npy"))
    for index, drawable in enumerate(drawables):
        dump(drawable, os.path.join(folder, f"before{index}.npy"))
    procedure = Gimp.get_pdb().lookup_procedure(PROCEDURE)
    result["procedure_found"] = procedure is not None
    result["registration"] = registration(procedure)
    config = procedure.create_config()
    interactive = job.get("interactive", False)
    config.set_property("run-mode", Gimp.RunMode.INTERACTIVE if interactive else Gimp.RunMode.NONINTERACTIVE)
    config.set_property("image", image)
    config.set_core_object_array("drawables", drawables)
    for name, value in job.get("arguments", {}).items():
        config.set_property(name, value)
    undo_before = image.undo_is_enabled()
    image.clean_all()  # what the job did to set the image up is not the plug-in's change
    outcome = procedure.run(config)
    result["dirty"] = image.is_dirty()
    result["status"] = outcome.index(0).value_nick if hasattr(outcome.index(0), "value_nick") else str(outcome.index(0))
    result["success"] = outcome.index(0) == Gimp.PDBStatusType.SUCCESS
    result["undo_enabled"] = undo_before
    dump(layer, os.path.join(folder, "after.npy"))
    for index, drawable in enumerate(drawables):
        dump(drawable, os.path.join(folder, f"after{index}.npy"))
    result["offsets"] = list(layer.get_offsets()[1:])
    if job.get("export"):
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(job["export"]), None)
    if job.get("save_xcf"):
        Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(job["save_xcf"]), None)
    image.delete()


def inspect_job(job, folder, result):
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(job["input"]))
    layers = []
    for index, layer in enumerate(image.get_layers()):
        dump(layer, os.path.join(folder, f"layer{index}.npy"))
        layers.append({"name": layer.get_name(), "offsets": list(layer.get_offsets()[1:]),
                       "size": [layer.get_width(), layer.get_height()], "visible": layer.get_visible()})
    result["layers"] = layers
    result["size"] = [image.get_width(), image.get_height()]
    result["success"] = True
    image.delete()


def build_job(job, folder, result):
    """Writes an XCF with several layers, as a GIMP user would have made it."""
    width, height = job["size"]
    image = Gimp.Image.new(width, height, Gimp.ImageBaseType.RGB)
    for spec in job["layers"]:
        source = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(spec["file"]))
        layer = Gimp.Layer.new_from_drawable(source.get_layers()[0], image)
        layer.set_name(spec["name"])
        image.insert_layer(layer, None, -1)
        if spec.get("alpha"):
            layer.add_alpha()
        layer.set_offsets(*spec["offsets"])
        layer.set_visible(spec.get("visible", True))
        source.delete()
    if job.get("precision") == "u16-linear":
        image.convert_precision(Gimp.Precision.U16_LINEAR)
    Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(job["output"]), None)
    result["success"] = True
    image.delete()


def main():
    with open(os.environ["FBCNN_GIMP_JOB"], encoding="utf-8") as handle:
        job = json.load(handle)
    folder = os.path.dirname(os.environ["FBCNN_GIMP_JOB"])
    result = {"success": False}
    try:
        {"restore": restore_job, "inspect": inspect_job, "build": build_job, "open": open_job}[job["action"]](job, folder, result)
    except Exception:
        result["error"] = traceback.format_exc()
    with open(os.path.join(folder, "result.json"), "w", encoding="utf-8") as handle:
        json.dump(result, handle)


main()
