"""FBCNN as a VapourSynth filter: clip in, clip out.

The filter holds no model logic: it turns frames into float arrays, hands
them to the shared :class:`~fbcnn_plugins.core.restorer.Restorer`, and writes
the result and the QF it used back as frame properties.  Every argument is
checked when the filter is built, so a script fails at load time with a
``vs.Error`` that says what is wrong, never halfway through an encode; and
building requests no frame (colorimetry and a qf clip's values are read per
frame), so ``vspipe --info`` renders nothing upstream.
"""

from __future__ import annotations

import collections
import itertools
import threading
from typing import Callable, Sequence, Union

import numpy as np
import vapoursynth as vs

from fbcnn_plugins.core.catalog import default_model_entry
from fbcnn_plugins.core.qf_temporal import HOLD_METHODS, hold_qf, is_scene_change, scene_window, thumbnail
from fbcnn_plugins.core.quality import QF_MAX, QF_MIN, clamp_qf
from fbcnn_plugins.core.restorer import Restorer
from fbcnn_plugins.core.threads import set_num_threads
from fbcnn_plugins.core.torch_extra import torch_installed

from .arguments import check_options, check_planes, check_yuv_mode
from .colorimetry import parse_matrix, through_rgb

QFArgument = Union[None, int, Sequence[int], Callable[[int], int], vs.VideoNode]
QFSource = Callable[[int, vs.VideoFrame], int]
PROP_QF = "FBCNN_QF"
PROP_PREDICTED = "FBCNN_QF_Predicted"
_BATCH_RESULTS_KEPT = 8  # batches' worth of finished frames waiting for their request
_PREDICTION_CACHE_FRAMES = 256


def fbcnn(
    clip: vs.VideoNode,
    qf: QFArgument = None,
    model: str | None = None,
    device: str = "auto",
    precision: str | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    num_streams: int = 1,
    batch_size: int = 1,
    qf_smoothing: int = 0,
    qf_smoothing_method: str = "mean",
    scene_detection: bool = False,
    yuv_mode: str | None = None,
    matrix: int | str | None = None,
    self_ensemble: bool = False,
    planes: int | Sequence[int] | None = None,
) -> vs.VideoNode:
    """Remove JPEG/MPEG-style blocking and ringing from every frame with FBCNN.

    :param clip: RGB or GRAY (8-16 bit integer, 16- or 32-bit float); YUV through ``yuv_mode``.
    :param qf: ``None`` lets the network estimate each frame's strength (its strength head, fitted to the
        strengths that restore decoded frames best; its QF head for models without one); an int 1..100 fixes it for all
        frames; a sequence gives one QF per frame; a function ``n -> int`` decides per frame; a clip
        supplies it per frame in its ``FBCNN_QF`` frame property (e.g. from an analysis pass).
        Lower QF means stronger restoration.
    :param model: registered model name or weights path (default: the bundled video model, trained on
        MPEG-2, H.264, HEVC and JPEG damage; the photo models where none is installed).
    :param device: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    :param precision: ``fp32``, ``fp16`` or ``bf16``; half-float clips use fp16 where the device has it.
    :param tile, overlap: tile size and overlap (multiples of 8) for large frames; None: 512 (2048 on CUDA) and 32.
    :param num_streams: CUDA streams used concurrently on a GPU.
    :param batch_size: frames restored together in one network call (all with the same QF).
    :param qf_smoothing: average the predicted QF over +-N frames of the same scene
        (scene cuts from ``_SceneChangePrev``/``_SceneChangeNext``) so the strength does not flicker.
    :param qf_smoothing_method: how the window's predictions become one QF: ``"mean"``, or the robust
        ``"low"`` (25th percentile: the strength of the window's more damaged frames, which holds
        steady through a GOP's I/P/B pattern when N is half a GOP or more), ``"median"``, ``"min"``.
    :param scene_detection: also cut the window where consecutive frames differ like a new shot
        (thumbnails compared; for clips without ``_SceneChange*`` properties).
    :param yuv_mode: YUV clips only.  ``"rgb"`` (default) converts each frame to RGB and back with
        ``core.resize``, using the frame's own matrix, range and chroma location; ``"luma"`` runs a
        gray model on Y and keeps the chroma planes.
    :param matrix: YUV clips in ``"rgb"`` mode only: the matrix (a number such as 1, or a name such
        as ``"709"``) for frames without a ``_Matrix`` property; it overrides the property.
    :param self_ensemble: average the 8 flips/rotations of every frame: a little more quality
        (+0.08 dB at QF 10 on the validation set) for 8x the network time: for a final render.
    :param planes: planes to restore (vsjetpack convention: None = all); the others are copied from
        the source.  E.g. ``planes=0`` restores only luma of a YUV clip, ``planes=[1, 2]`` only chroma.
    :return: the restored clip, same format; props ``FBCNN_QF`` and (when predicted) ``FBCNN_QF_Predicted``.
    """
    func = "fbcnn"
    if not isinstance(clip, vs.VideoNode):
        raise vs.Error(f"{func}: clip must be a video clip, got {type(clip).__name__}")
    fmt = clip.format
    if fmt is None or fmt.id == vs.PresetVideoFormat.NONE or clip.width == 0 or clip.height == 0:
        raise vs.Error(f"{func}: variable-format or variable-size clips are not supported")
    if fmt.color_family not in (vs.RGB, vs.GRAY, vs.YUV):
        raise vs.Error(f"{func}: unsupported colour family {fmt.color_family.name}; use RGB, GRAY or YUV")
    _check_sample_format(fmt, func)
    check_options(
        func, model=model, device=device, precision=precision, tile=tile, overlap=overlap, num_streams=num_streams,
        batch_size=batch_size, qf_smoothing=qf_smoothing, self_ensemble=self_ensemble,
    )
    qf_for_frame = _qf_source(qf, clip.num_frames, func)
    if qf_smoothing_method not in HOLD_METHODS:
        raise vs.Error(f"{func}: qf_smoothing_method must be one of {', '.join(HOLD_METHODS)}, got {qf_smoothing_method!r}")
    smoothing = (qf_smoothing, qf_smoothing_method, bool(scene_detection))
    if qf_smoothing and qf_for_frame is not None:
        raise vs.Error(f"{func}: qf_smoothing smooths the predicted QF; it cannot be combined with a given qf")
    mode = check_yuv_mode(fmt, yuv_mode, matrix, func)
    matrix_code = parse_matrix(matrix, func)
    chosen_planes = check_planes(planes, fmt, mode, func)
    if isinstance(qf, vs.VideoNode):
        # The QF travels as a frame property through every conversion below.  The clip's own
        # FBCNN_QF (say, from an earlier fbcnn call) goes first, so a qf clip frame without the
        # property is an error rather than a silent reuse of the old value.
        clip = core_of(clip).std.CopyFrameProps(core_of(clip).std.RemoveFrameProps(clip, props=[PROP_QF]), qf, props=[PROP_QF])

    def restore(source: vs.VideoNode) -> vs.VideoNode:
        return _restore_rgb_or_gray(
            source, qf_for_frame, model=model, device=device, precision=precision, tile=tile, overlap=overlap,
            num_streams=num_streams, batch_size=batch_size, qf_smoothing=smoothing, self_ensemble=self_ensemble,
        )

    core = core_of(clip)
    if mode == "luma":
        restored = restore(core.std.ShufflePlanes(clip, 0, vs.GRAY))
        merged = core.std.ShufflePlanes([restored, clip], [0, 1, 2], vs.YUV)
        return core.std.CopyFrameProps(merged, restored, props=[PROP_QF, PROP_PREDICTED])
    restored = through_rgb(clip, restore, matrix_code, func) if mode == "rgb" else restore(clip)
    if len(chosen_planes) == fmt.num_planes:
        return restored
    merged = core.std.ShufflePlanes(
        [restored if p in chosen_planes else clip for p in range(fmt.num_planes)], list(range(fmt.num_planes)),
        fmt.color_family,
    )
    return core.std.CopyFrameProps(merged, restored)


def _restore_rgb_or_gray(
    clip: vs.VideoNode, qf_for_frame: QFSource | None, *, model: str | None, device: str, precision: str | None,
    tile: int | None, overlap: int | None, num_streams: int, batch_size: int, qf_smoothing: tuple[int, str, bool],
    self_ensemble: bool,
) -> vs.VideoNode:
    """The network on an RGB or GRAY clip: load the model now, restore frames when they are asked for."""
    func = "fbcnn"
    fmt = clip.format
    gray = fmt.color_family == vs.GRAY
    # Frames run side by side on VapourSynth's threads; the engine is built with that CPU budget.
    set_num_threads(core_of(clip).num_threads)
    try:
        if model is None:  # the core's choice for footage: the video model where one is installed
            model = default_model_entry(gray, footage="video").name
        restorer = Restorer(
            model, device=device, precision=_precision_for(fmt, precision, device),
            tile=tile, overlap=overlap,
            self_ensemble=self_ensemble,
        )
        loaded = restorer.model_for(gray)
    except (ValueError, RuntimeError) as error:
        raise vs.Error(f"{func}: {error}") from None
    if gray and not loaded.is_gray and loaded.in_channels != 3:
        raise vs.Error(f"{func}: model {loaded.name!r} cannot restore gray clips")
    if not gray and loaded.is_gray:
        raise vs.Error(f"{func}: model {loaded.name!r} is a gray model; the clip is RGB")

    engine = _FrameEngine(restorer, gray, fmt, clip.num_frames, qf_for_frame, qf_smoothing, batch_size, num_streams)
    reach = max(qf_smoothing[0], batch_size - 1)
    neighbours = [_shifted(clip, offset) for offset in range(-reach, reach + 1) if offset != 0]
    return core_of(clip).std.ModifyFrame(clip, [clip, *neighbours], engine.selector(reach))


def core_of(clip: vs.VideoNode) -> vs.Core:
    return clip.core if hasattr(clip, "core") else vs.core


def _check_sample_format(fmt: vs.VideoFormat, func: str) -> None:
    if fmt.sample_type == vs.FLOAT and fmt.bits_per_sample not in (16, 32):
        raise vs.Error(f"{func}: unsupported float format {fmt.name}")
    if fmt.sample_type == vs.INTEGER and not 8 <= fmt.bits_per_sample <= 16:
        raise vs.Error(f"{func}: unsupported integer depth {fmt.bits_per_sample} bits in {fmt.name}; use 8..16")


def _precision_for(fmt: vs.VideoFormat, precision: str | None, device: str) -> str | None:
    """Half-float clips run in fp16 when the device has fast fp16 (a GPU); fp32 on the CPU."""
    if precision is not None or not (fmt.sample_type == vs.FLOAT and fmt.bits_per_sample == 16):
        return precision
    if device == "cpu" or not torch_installed():
        return None
    import torch

    return "fp16" if torch.cuda.is_available() else None


def _qf_source(qf: QFArgument, num_frames: int, func: str) -> QFSource | None:
    """Validate ``qf`` now and return a function of (frame number, frame); None means predict.

    What can be checked without frames is checked here and raises ``vs.Error``; what only a frame
    shows (a function's value, a qf clip's property) raises ValueError from the returned function,
    which the frame callback reports once, as "fbcnn: frame N: ...".
    """
    if qf is None:
        return None

    def checked(value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not QF_MIN <= int(value) <= QF_MAX:
            raise ValueError(f"qf{where} must be an integer {QF_MIN}..{QF_MAX}, got {value!r}")
        return int(value)

    if isinstance(qf, vs.VideoNode):
        if qf.num_frames != num_frames:
            raise vs.Error(f"{func}: the qf clip has {qf.num_frames} frames, the clip {num_frames}")

        def from_props(n: int, frame: vs.VideoFrame) -> int:
            if PROP_QF not in frame.props:
                raise ValueError(f"frame {n} of the qf clip has no {PROP_QF} property")
            return checked(frame.props[PROP_QF], f" clip frame {n}")

        return from_props
    if callable(qf):
        return lambda n, frame: checked(qf(n), f"({n})")
    try:
        if isinstance(qf, (int, np.integer)) and not isinstance(qf, bool):
            fixed = checked(qf, "")
            return lambda n, frame: fixed
        if isinstance(qf, (list, tuple, np.ndarray)):
            values = [checked(v, f"[{i}]") for i, v in enumerate(qf)]
            if len(values) != num_frames:
                raise ValueError(f"qf has {len(values)} values for a clip of {num_frames} frames")
            return lambda n, frame: values[n]
    except ValueError as error:
        raise vs.Error(f"{func}: {error}") from None
    raise vs.Error(f"{func}: qf must be None, an int, a sequence of ints, a function of the frame number or a clip")


def _shifted(clip: vs.VideoNode, offset: int) -> vs.VideoNode:
    """A clip whose frame n is frame n+offset of ``clip``, holding the first/last frame at the ends."""
    core = core_of(clip)
    last = clip.num_frames - 1
    if offset > 0:
        tail = clip[last] * min(offset, clip.num_frames)
        return core.std.Splice([clip[offset:], tail]) if offset <= last else tail[: clip.num_frames]
    head = clip[0] * min(-offset, clip.num_frames)
    return core.std.Splice([head, clip[: clip.num_frames + offset]]) if -offset <= last else head[: clip.num_frames]


class _FrameEngine:
    """Turns frames into arrays, runs the restorer, and remembers per-frame QF predictions."""

    def __init__(
        self, restorer: Restorer, gray: bool, fmt: vs.VideoFormat, num_frames: int,
        qf_for_frame: QFSource | None, smoothing: tuple[int, str, bool], batch_size: int, num_streams: int,
    ) -> None:
        self.restorer = restorer
        self.num_frames = num_frames
        self.gray = gray
        self.fmt = fmt
        self.qf_for_frame = qf_for_frame
        self.smoothing, self.smoothing_method, self.scene_detection = smoothing
        self.batch_size = batch_size
        self.predictions: collections.OrderedDict[int, float] = collections.OrderedDict()
        self.thumbnails: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.batch_results: collections.OrderedDict[int, tuple[np.ndarray, int, float | None]] = collections.OrderedDict()
        self.lock = threading.Lock()
        use_streams = restorer.device.type == "cuda" and num_streams > 1
        self.streams = None
        if use_streams:
            import torch

            self.streams = itertools.cycle([torch.cuda.Stream(restorer.device.torch()) for _ in range(num_streams)])
        self.scale = None if fmt.sample_type == vs.FLOAT else float((1 << fmt.bits_per_sample) - 1)
        self.planes_dtype = np.uint8 if fmt.bits_per_sample == 8 and self.scale else (np.uint16 if self.scale else None)

    # -- pixels ------------------------------------------------------------
    def to_tensor(self, frame: vs.VideoFrame) -> np.ndarray:
        planes = np.stack([np.asarray(frame[p]) for p in range(frame.format.num_planes)])
        array = planes.astype(np.float32)
        if self.scale:
            array /= self.scale
        else:
            np.clip(array, 0.0, 1.0, out=array)  # keep out-of-range float input away from the network
        return array[None]

    def write(self, frame: vs.VideoFrame, restored: np.ndarray) -> vs.VideoFrame:
        out = frame.copy()
        for p in range(out.format.num_planes):
            plane = restored[p]
            if self.scale:
                plane = np.clip(np.rint(plane * self.scale), 0, self.scale).astype(self.planes_dtype)
            else:
                plane = plane.astype(np.float16 if self.fmt.bits_per_sample == 16 else np.float32)
            np.copyto(np.asarray(out[p]), plane)
        return out

    def network_input(self, tensor: np.ndarray) -> np.ndarray:
        model = self.restorer.model_for(self.gray)
        return np.repeat(tensor, 3, axis=1) if tensor.shape[1] == 1 and model.in_channels == 3 else tensor

    def network_output(self, tensor: np.ndarray, channels: int) -> np.ndarray:
        array = tensor[0]
        return array.mean(axis=0, keepdims=True) if array.shape[0] != channels else array

    # -- QF --------------------------------------------------------------------
    def predicted(self, n: int, frame: vs.VideoFrame) -> float:
        with self.lock:
            if n in self.predictions:
                return self.predictions[n]
        _, network = self.restorer.prepared_network(self.gray)
        value = self.restorer.predict_strength(self.network_input(self.to_tensor(frame)), network)
        with self.lock:
            self.predictions[n] = value
            while len(self.predictions) > _PREDICTION_CACHE_FRAMES:
                self.predictions.popitem(last=False)
        return value

    def smoothed(self, n: int, window: dict[int, vs.VideoFrame], num_frames: int) -> float:
        """One QF for the frames within +-N of frame n that share its scene (the core's rule)."""
        def cut_before(k: int) -> bool:  # a new scene starts at frame k
            before, after = window[k - 1], window[k]
            if after.props.get("_SceneChangePrev", 0) or before.props.get("_SceneChangeNext", 0):
                return True
            return self.scene_detection and is_scene_change(self.thumbnail(k - 1, before), self.thumbnail(k, after))

        frames = scene_window(n, num_frames, self.smoothing, cut_before)
        return hold_qf([self.predicted(k, window[k]) for k in frames], self.smoothing_method)

    def thumbnail(self, n: int, frame: vs.VideoFrame) -> np.ndarray:
        """A small copy of frame n's first plane (luma, or red), for scene detection; cached."""
        with self.lock:
            if n in self.thumbnails:
                return self.thumbnails[n]
        peak = 1.0 if frame.format.sample_type == vs.FLOAT else float((1 << frame.format.bits_per_sample) - 1)
        small = thumbnail(np.asarray(frame[0]), peak)
        with self.lock:
            self.thumbnails[n] = small
            while len(self.thumbnails) > _PREDICTION_CACHE_FRAMES:
                self.thumbnails.popitem(last=False)
        return small

    # -- the per-frame callback ----------------------------------------------------
    def selector(self, reach: int) -> Callable[[int, list[vs.VideoFrame]], vs.VideoFrame]:
        offsets = [o for o in range(-reach, reach + 1) if o != 0]

        def select(n: int, f: list[vs.VideoFrame] | vs.VideoFrame) -> vs.VideoFrame:
            frames = f if isinstance(f, list) else [f]
            num_frames = self.num_frames
            window = {n: frames[0]}
            for offset, frame in zip(offsets, frames[1:]):
                if 0 <= n + offset < num_frames:
                    window[n + offset] = frame
            try:
                restored, qf, predicted = self.restore_frame(n, window, num_frames)
            except Exception as error:  # surface as a VapourSynth error on this frame, not a crash
                raise vs.Error(f"fbcnn: frame {n}: {error}") from None
            out = self.write(frames[0], restored)
            out.props[PROP_QF] = qf
            if predicted is not None:
                out.props[PROP_PREDICTED] = predicted
            return out

        return select

    def restore_frame(self, n: int, window: dict[int, vs.VideoFrame], num_frames: int) -> tuple[np.ndarray, int, float | None]:
        if self.batch_size > 1:
            with self.lock:
                if n in self.batch_results:
                    return self.batch_results.pop(n)
        if self.qf_for_frame is None and not self.smoothing and self.batch_size == 1 and self.streams is None:
            # The core predicts the QF from the restoring pass's own encoder features: no second pass.
            frame = window[n]
            restored, estimate = self.restorer.restore_tensor(self.network_input(self.to_tensor(frame)), gray=self.gray)
            return self.network_output(restored, frame.format.num_planes), estimate.value, estimate.predicted
        batch = [n]
        if self.batch_size > 1:
            start = n - n % self.batch_size
            batch = [k for k in range(start, min(start + self.batch_size, num_frames)) if k in window]
        results = {}
        groups: dict[int, list[int]] = collections.defaultdict(list)
        info = {}
        for k in batch:
            if self.qf_for_frame is not None:
                qf, predicted = self.qf_for_frame(k, window[k]), None
            else:
                predicted = self.smoothed(k, window, num_frames) if self.smoothing else self.predicted(k, window[k])
                qf = clamp_qf(predicted)
            info[k] = (qf, predicted)
            groups[qf].append(k)
        for qf, members in groups.items():
            tensors = np.concatenate([self.network_input(self.to_tensor(window[k])) for k in members])
            outputs = self.run_network(tensors, qf)
            for k, output in zip(members, outputs):
                results[k] = (self.network_output(output[None], window[k].format.num_planes), *info[k])
        if len(results) > 1:
            with self.lock:
                self.batch_results.update({k: v for k, v in results.items() if k != n})
                # Frames of a batch that nobody requests (a trimmed or seeking script) must not pile up.
                while len(self.batch_results) > _BATCH_RESULTS_KEPT * self.batch_size:
                    self.batch_results.popitem(last=False)
        return results[n]

    def run_network(self, tensors: np.ndarray, qf: int) -> np.ndarray:
        """One network call (tiled for a single frame), on the next CUDA stream when several are in use."""
        if self.streams is None:
            return self._run(tensors, qf)
        import torch

        stream = next(self.streams)
        with torch.cuda.stream(stream):
            out = self._run(tensors, qf)
        stream.synchronize()
        return out

    def _run(self, tensors: np.ndarray, qf: int) -> np.ndarray:
        restorer = self.restorer
        if tensors.shape[0] == 1 or max(tensors.shape[-2:]) > restorer.tile:
            # Frames bigger than one tile are restored one by one through the core's tiling, so
            # batch_size never lifts the memory bound that the tile size sets.
            return np.concatenate([restorer.restore_tensor(t[None], qf, gray=self.gray)[0] for t in tensors])
        _, network = restorer.prepared_network(self.gray)
        return restorer.forward(network, tensors, qf)
