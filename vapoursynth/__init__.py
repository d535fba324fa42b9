"""FBCNN as a VapourSynth filter (``fbcnn_plugins.vapoursynth``)."""

if __name__ == "vapoursynth":
    # Imported as the top-level ``vapoursynth`` because a checkout's root is on
    # sys.path: hand the caller the real VapourSynth instead of this folder.
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec("vapoursynth", _path)
    if _spec is None or _spec.loader is None:
        raise ImportError("VapourSynth is not installed (pip install vapoursynth)")
    _real = importlib.util.module_from_spec(_spec)
    sys.modules["vapoursynth"] = _real
    _spec.loader.exec_module(_real)
else:
    from .filter import PROP_PREDICTED, PROP_QF, fbcnn

    __all__ = ["fbcnn", "PROP_QF", "PROP_PREDICTED"]
