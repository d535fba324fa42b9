"""What a GPU window receives: the bundled weights it never reads are set aside and put back.

Checked on a real clone of this repository, with real git: the budget the data pack gets, that
nothing but the index and the exclude file changes, and that ``gpu_collect`` puts the weights
back before anything can be committed.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

pytest.importorskip("torch", reason="the data pack is a training tool (pip install 'fbcnn-plugins[torch]')")

from fbcnn_plugins.training.data_pack import MIB, byte_budget, tree_bytes
from fbcnn_plugins.training.window_tree import MARKER, STAY_BEHIND, exclude_file, put_back, set_aside, set_aside_paths

from conftest import REPO

#: The data a window must be able to carry (issue: short GPU runs), beside 1 MiB of wheels and margin.
PACK_GOAL = 35 * MIB


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True).stdout


@pytest.fixture()
def clone(tmp_path):
    if not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    target = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(target)], check=True)
    return target


def test_setting_aside_leaves_the_pack_its_budget_and_putting_back_restores_the_checkout(clone):
    before = tree_bytes(clone)
    sizes = {path: (clone / path).stat().st_size for path in STAY_BEHIND}

    assert sorted(set_aside(clone)) == sorted(STAY_BEHIND)
    assert set_aside(clone) == []  # a second call changes nothing
    listed = git(clone, "ls-files").splitlines() + git(clone, "ls-files", "--others", "--exclude-standard").splitlines()
    assert not set(STAY_BEHIND) & set(listed)  # neither tracked nor untracked-and-sent
    assert all((clone / path).stat().st_size == size for path, size in sizes.items())  # the files stay
    assert tree_bytes(clone)["tracked"] == before["tracked"] - sum(sizes.values())
    budget, _ = byte_budget(clone, 1 * MIB)
    assert budget >= PACK_GOAL, f"the pack gets {budget / MIB:.1f} MiB"

    assert sorted(put_back(clone)) == sorted(STAY_BEHIND)
    assert git(clone, "status", "--porcelain") == ""
    assert MARKER not in exclude_file(clone).read_text() and set_aside_paths(clone) == []
    assert put_back(clone) == []


def test_changed_weights_are_not_set_aside(clone):
    path = clone / STAY_BEHIND[0]
    path.write_bytes(path.read_bytes() + b"x")
    with pytest.raises(ValueError, match=STAY_BEHIND[0]):
        set_aside(clone)
    assert git(clone, "status", "--porcelain").strip() == f"M {STAY_BEHIND[0]}"


def test_gpu_collect_puts_the_weights_back_even_when_the_returned_files_are_refused(clone, tmp_path):
    set_aside(clone)
    (tmp_path / "returned").mkdir()
    done = subprocess.run([sys.executable, "-P", "-m", "fbcnn_plugins.training.gpu_collect", str(tmp_path / "returned"),
                           "--into", str(tmp_path / "history")], capture_output=True, text=True, cwd=clone)
    assert done.returncode == 2 and "no weights card" in done.stderr
    assert "put back" in done.stdout
    assert git(clone, "status", "--porcelain") == ""


def test_the_command_line_says_what_it_did(clone):
    command = [sys.executable, "-P", "-m", "fbcnn_plugins.training.window_tree"]
    shown = subprocess.run([*command, "set-aside"], capture_output=True, text=True, cwd=clone)
    assert shown.returncode == 0 and all(path in shown.stdout for path in STAY_BEHIND)
    status = subprocess.run([*command, "status"], capture_output=True, text=True, cwd=clone)
    assert sorted(status.stdout.split()) == sorted(STAY_BEHIND)
    (clone / STAY_BEHIND[0]).unlink()
    # Putting back works from the index alone; the file itself comes back with a checkout.
    back = subprocess.run([*command, "put-back"], capture_output=True, text=True, cwd=clone)
    assert back.returncode == 0
    git(clone, "checkout", "--", STAY_BEHIND[0])
    assert git(clone, "status", "--porcelain") == ""
