"""Render a VapourSynth script in frame-range chunks on the workers of a Ray cluster.

Each chunk is one ``vspipe --start A --end B`` run of the *whole* script on
some worker, written to a part file; the parts are then joined in order into
one raw or Y4M stream, which is exactly what a single ``vspipe`` run of the
script would have written.

Why chunks of the whole script and not scripts of a trimmed source: a
VapourSynth frame is computed from whatever source frames its filters ask
for, wherever the chunk starts.  The fbcnn filter's ``qf_smoothing=N`` asks for
frames n-N..n+N of its input (and ``batch_size`` batches are aligned on
absolute frame numbers), so the first and last frames of a chunk are smoothed
over the same neighbours as in a single run: each chunk silently decodes up to
N frames beyond its borders, and that overlap is the whole cost of chunking.
Trimming the source before the filter (``clip[a:b]``) would cut the window
and change the QF of the border frames; this module never does that.

Part files are written atomically and kept until the join, so a re-run after a
crash or a lost worker renders only the missing chunks; a chunk whose worker
dies is retried by Ray (``max_retries``).  Every node must see the script, its
sources and the output folder under the same paths.

Run it as ``python -m fbcnn_plugins.ray.video SCRIPT OUT.y4m --chunk 500 --ray ADDRESS``.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from fbcnn_plugins.core.atomic import atomic_target
from fbcnn_plugins.ray.restore import fbcnn_environment

#: A chunk whose worker dies is run again this many times.
MAX_CHUNK_RETRIES = 3
_COPY_BLOCK = 1 << 22


class VideoChunkError(RuntimeError):
    """vspipe failed on the script or a chunk; the message carries vspipe's own error."""


@dataclass(frozen=True)
class Chunk:
    index: int
    first: int  # first frame, inclusive
    last: int  # last frame, inclusive (vspipe's --end)

    @property
    def frames(self) -> int:
        return self.last - self.first + 1


def vspipe_path() -> str:
    """The vspipe of this Python's environment, else the one on PATH."""
    beside = Path(sys.executable).with_name("vspipe")
    found = str(beside) if beside.is_file() else shutil.which("vspipe")
    if not found:
        raise VideoChunkError("vspipe not found (pip install vapoursynth, then run `vapoursynth config` once)")
    return found


def script_frames(script: Path, script_args: Sequence[str] = ()) -> int:
    """The number of frames of the script's output 0, from ``vspipe --info``."""
    info = _vspipe(["--info", *_arg_options(script_args), str(script), "-"])
    match = re.search(r"^Frames:\s*(\d+)", info, re.MULTILINE)
    if not match:
        raise VideoChunkError(f"{script}: vspipe --info printed no frame count:\n{info}")
    return int(match.group(1))


def plan_chunks(num_frames: int, chunk_frames: int) -> list[Chunk]:
    """Consecutive frame ranges of ``chunk_frames`` (the last one shorter) covering the clip."""
    if num_frames < 1:
        raise ValueError("the clip has no frames")
    if chunk_frames < 1:
        raise ValueError(f"chunk length must be at least 1 frame, got {chunk_frames}")
    return [
        Chunk(i, first, min(first + chunk_frames, num_frames) - 1)
        for i, first in enumerate(range(0, num_frames, chunk_frames))
    ]


def render_chunk(script: str, chunk: Chunk, part: str, y4m: bool, script_args: Sequence[str] = ()) -> str:
    """Render one chunk of the whole script into ``part`` (atomically); returns ``part``."""
    if os.path.exists(part):  # finished by an earlier run or an earlier try of this one
        return part
    with atomic_target(part, replace=False) as tmp:
        options = ["--start", str(chunk.first), "--end", str(chunk.last), *_arg_options(script_args)]
        _vspipe([*options, *(["-c", "y4m"] if y4m else []), script, str(tmp)])
    return part


def join_parts(parts: Sequence[Path], output: Path, y4m: bool, *, overwrite: bool = False) -> Path:
    """Concatenate the parts losslessly into ``output`` (atomically).

    Raw parts are frames back to back.  Each Y4M part starts with a stream
    header that differs between parts only in vspipe's frame count
    (``XLENGTH``); the joined stream gets one header with the total count,
    then every FRAME record in order.
    """
    headers = [_y4m_header(part) for part in parts] if y4m else []
    with atomic_target(output, replace=overwrite) as tmp, open(tmp, "wb") as sink:
        if y4m:
            sink.write(_joined_header(headers, parts))
        for part, header in zip(parts, headers or [b""] * len(parts)):
            with open(part, "rb") as source:
                source.seek(len(header))
                shutil.copyfileobj(source, sink, _COPY_BLOCK)
    return output


def _y4m_header(part: Path) -> bytes:
    with open(part, "rb") as source:
        header = source.readline()
    if not header.startswith(b"YUV4MPEG2 ") or not header.endswith(b"\n"):
        raise VideoChunkError(f"{part}: not a Y4M stream (header {header[:40]!r})")
    return header


def _joined_header(headers: list[bytes], parts: Sequence[Path]) -> bytes:
    """The first part's header with XLENGTH summed over the parts; the parts must agree on the rest."""
    length = re.compile(rb" XLENGTH=(\d+)")
    first = length.sub(b"", headers[0])
    for header, part in zip(headers, parts):
        if length.sub(b"", header) != first:
            raise VideoChunkError(f"{part}: its Y4M header {header.strip()!r} differs from the first part's")
    counts = [length.search(header) for header in headers]
    if not all(counts):
        return headers[0]
    return length.sub(b" XLENGTH=%d" % sum(int(c.group(1)) for c in counts), headers[0])


def render_on_ray(
    script: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    chunk_frames: int,
    address: str | None = None,
    cpus_per_chunk: float = 1.0,
    script_args: Sequence[str] = (),
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Render ``script`` into ``output`` (``.y4m``: Y4M, anything else: raw frames), chunk by chunk on Ray."""
    import ray

    script, output = Path(script).resolve(), Path(output).resolve()
    if output.exists() and not overwrite:
        raise FileExistsError(f"{output}: output exists (pass overwrite=True to replace it)")
    y4m = output.suffix.lower() == ".y4m"
    chunks = plan_chunks(script_frames(script, script_args), chunk_frames)
    parts_dir = output.with_name(f".{output.name}.parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    parts = [parts_dir / f"{c.index:06d}_{c.first}-{c.last}{'.y4m' if y4m else '.raw'}" for c in chunks]
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, include_dashboard=False, log_to_driver=True)
    try:
        remote = ray.remote(render_chunk).options(
            num_cpus=cpus_per_chunk, max_retries=MAX_CHUNK_RETRIES,
            runtime_env={"env_vars": fbcnn_environment()},  # the engine and options a local vspipe would see
        )
        pending = [remote.remote(str(script), c, str(p), y4m, list(script_args)) for c, p in zip(chunks, parts)]
        from tqdm import tqdm

        with tqdm(total=len(chunks), unit="chunk", file=sys.stderr, disable=not progress, leave=False) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)  # a chunk that failed after its retries raises here, with vspipe's message
                bar.update(1)
    finally:
        if started_here:
            ray.shutdown()
    join_parts(parts, output, y4m, overwrite=overwrite)
    shutil.rmtree(parts_dir)
    return output


def _arg_options(script_args: Sequence[str]) -> list[str]:
    return [option for value in script_args for option in ("--arg", value)]


def _vspipe(arguments: list[str]) -> str:
    run = subprocess.run([vspipe_path(), *arguments], capture_output=True, text=True)
    if run.returncode != 0:
        raise VideoChunkError(f"vspipe {' '.join(arguments)} failed:\n{run.stderr.strip()}")
    return run.stdout + run.stderr


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fbcnn_plugins.ray.video",
        description="Render a VapourSynth script in frame-range chunks on a Ray cluster and join them "
        "losslessly (OUT.y4m: Y4M, else raw frames as vspipe writes them).",
    )
    parser.add_argument("script", type=Path)
    parser.add_argument("output", type=Path)
    parser.add_argument("--chunk", type=int, default=500, metavar="FRAMES", help="frames per chunk (default: 500)")
    parser.add_argument("--ray", default=None, metavar="ADDRESS", help="Ray cluster address (default: auto)")
    parser.add_argument("--cpus-per-chunk", type=float, default=1.0, metavar="N")
    parser.add_argument("-a", "--arg", action="append", default=[], metavar="KEY=VALUE",
                        help="passed to the script as vspipe --arg")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output")
    args = parser.parse_args(argv)
    try:
        import ray  # noqa: F401
    except ImportError:
        print('ray_video needs Ray: pip install "fbcnn-plugins[ray]"', file=sys.stderr)
        return 2
    try:
        render_on_ray(args.script, args.output, chunk_frames=args.chunk, address=args.ray,
                      cpus_per_chunk=args.cpus_per_chunk, script_args=args.arg, overwrite=args.overwrite)
    except (VideoChunkError, ValueError, FileExistsError) as error:
        print(f"ray_video: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
