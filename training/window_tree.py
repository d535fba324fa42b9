"""What travels to a GPU window: the tree without the bundled weights a window never reads.

A window receives the tracked files, the untracked files git does not ignore, and the carried
paths, 64 MiB in all.  It trains and validates the colour ``base`` network against the bundled
colour ``small`` model, and times that model; the gray and the video model (10.7 MB each) are
never opened there.  Left in the tree they would take a third of the budget from the data pack.

So before a window they are *set aside*: taken out of git's index (``git rm --cached``; the
files stay on disk) and listed in ``.git/info/exclude``, which makes them untracked and ignored,
and so not sent.  Afterwards they are *put back* (``git reset`` of those paths from ``HEAD``,
and the exclude lines removed), and ``git status`` is as before.  ``gpu_collect`` puts them back
before it writes anything, so the commit of a window's weights can never carry their deletion.

    python -m fbcnn_plugins.training.window_tree set-aside     # training/gpu_window_prepare.sh does this
    python -m fbcnn_plugins.training.window_tree put-back      # gpu_collect does this
    python -m fbcnn_plugins.training.window_tree status
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from typing import Sequence

#: Bundled weights a GPU window never reads (it uses the colour ``small`` model only).
STAY_BEHIND = (
    "fbcnn_plugins/models/fbcnn-gray-small.safetensors",
    "fbcnn_plugins/models/fbcnn-color-video-small.safetensors",
)
#: The lines this module owns in ``.git/info/exclude`` start after this one.
MARKER = "# set aside for a GPU window (python -m fbcnn_plugins.training.window_tree put-back restores them)"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


def exclude_file(repo: Path) -> Path:
    """``.git/info/exclude`` of ``repo`` (git answers relative to the repository, or absolute)."""
    return repo / git(repo, "rev-parse", "--git-path", "info/exclude").strip()


def tracked(repo: Path, paths: Sequence[str]) -> list[str]:
    """Those of ``paths`` that are in git's index."""
    listed = git(repo, "ls-files", "-z", "--", *paths).split("\0")
    return [path for path in paths if path in listed]


def set_aside_paths(repo: Path) -> list[str]:
    """The paths this module has set aside in ``repo`` (its lines in the exclude file)."""
    exclude = exclude_file(repo)
    if not exclude.is_file():
        return []
    lines = exclude.read_text().splitlines()
    if MARKER not in lines:
        return []
    return [line.lstrip("/") for line in lines[lines.index(MARKER) + 1 :] if line.strip()]


def set_aside(repo: Path, paths: Sequence[str] = STAY_BEHIND) -> list[str]:
    """Take ``paths`` out of what a window receives (files kept); returns those newly set aside.

    Refuses a path whose file differs from ``HEAD`` or is missing: putting it back restores the
    committed version in the index, so uncommitted weights must be committed first."""
    already = set_aside_paths(repo)
    paths = [path for path in paths if path not in already]
    missing = [path for path in paths if not (repo / path).is_file()]
    if missing:
        raise FileNotFoundError(f"{', '.join(missing)}: not in the checkout, nothing to set aside")
    changed = git(repo, "status", "--porcelain", "--", *paths).strip() if paths else ""
    if changed:
        raise ValueError(f"commit these first, putting them back restores HEAD's version:\n{changed}")
    todo = tracked(repo, paths) if paths else []
    if todo:
        git(repo, "rm", "--cached", "-q", "--", *todo)
    exclude = exclude_file(repo)
    exclude.parent.mkdir(parents=True, exist_ok=True)
    kept = [line for line in (exclude.read_text().splitlines() if exclude.is_file() else [])
            if line != MARKER and line.lstrip("/") not in already]
    listed = sorted(set(already) | set(todo))
    exclude.write_text("\n".join([*kept, MARKER, *(f"/{path}" for path in listed)]) + "\n")
    return todo


def put_back(repo: Path) -> list[str]:
    """Undo :func:`set_aside`: the paths back in the index as ``HEAD`` has them, the exclude lines gone."""
    paths = set_aside_paths(repo)
    if not paths:
        return []
    git(repo, "reset", "-q", "HEAD", "--", *paths)
    exclude = exclude_file(repo)
    lines = exclude.read_text().splitlines()
    exclude.write_text("\n".join(lines[: lines.index(MARKER)]) + "\n")
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("set-aside", "put-back", "status"))
    parser.add_argument("--repo", type=Path, default=Path.cwd())
    args = parser.parse_args(argv)
    try:
        repo = Path(git(args.repo, "rev-parse", "--show-toplevel").strip())
        if args.action == "set-aside":
            done = set_aside(repo)
            print(f"set aside (not sent to a GPU window): {', '.join(done) or 'nothing new'}")
        elif args.action == "put-back":
            done = put_back(repo)
            print(f"put back: {', '.join(done) or 'nothing was set aside'}")
        else:
            print("\n".join(set_aside_paths(repo)) or "nothing set aside")
    except (subprocess.CalledProcessError, FileNotFoundError, ValueError) as error:
        detail = error.stderr.strip() if isinstance(error, subprocess.CalledProcessError) else str(error)
        print(f"window_tree: {detail}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
