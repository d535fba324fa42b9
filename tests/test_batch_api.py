"""``fbcnn_plugins.batch`` from Python: the docs' example run as written, resume, refusals and records."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fbcnn_plugins.batch import (
    Job, OutputExists, PlanError, RestoreOptions, make_restorer, plan_batch, restore_file, restore_one, run_plan,
)

from conftest import REPO, natural_image

DOCS_HEADING = "### Batches of files: `fbcnn_plugins.batch`"


def docs_example() -> str:
    """The first Python block under the batch API's heading in docs/models.md, as printed there."""
    text = (REPO / "docs" / "models.md").read_text()
    section = text[text.index(DOCS_HEADING):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_example(code: str) -> str:
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "docs/models.md", "exec"), {"__name__": "docs_example"})
    return printed.getvalue()


def jpegs(folder: Path, count: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        paths.append(folder / f"shot{i}.jpg")
        Image.fromarray(natural_image(64, 96, seed=i)).save(paths[-1], quality=20)
    return paths


def test_the_docs_example_restores_a_folder_and_resumes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    sources = jpegs(tmp_path / "photos", 3)
    (tmp_path / "photos" / "notes.jpg").write_text("not a photo")
    code = docs_example()

    first = run_example(code)
    assert "3 restored, 0 skipped, 1 failed" in first
    assert "notes.jpg" in first and "not an image" in first  # the error line names the file
    outputs = [tmp_path / "photos" / "restored" / f"{p.stem}_fbcnn.png" for p in sources]
    for source, output in zip(sources, outputs):
        with Image.open(output) as restored, Image.open(source) as original:
            assert restored.size == original.size
            assert not np.array_equal(np.asarray(restored), np.asarray(original.convert("RGB")))
    kept = {p: p.read_bytes() for p in outputs}

    outputs[1].unlink()  # as if the first run had been stopped before its second file
    again = run_example(code)
    assert "1 restored, 2 skipped, 1 failed" in again  # the missing file only; the finished ones untouched
    assert outputs[1].exists()
    assert all(p.read_bytes() == data for p, data in kept.items() if p != outputs[1])
    assert not [p for p in (tmp_path / "photos" / "restored").iterdir() if p.name.startswith(".")]


def test_the_docs_example_reports_a_refused_plan_and_does_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    jpegs(tmp_path / "photos", 1)
    (tmp_path / "photos" / "restored").write_text("a file where the output folder should be")
    with pytest.raises(SystemExit, match="not started: cannot write outputs"):
        run_example(docs_example())


def test_options_refuse_bad_values_when_made():
    with pytest.raises(ValueError, match="^qf: "):
        RestoreOptions(qf=250)
    with pytest.raises(ValueError, match="^tile: a positive multiple of 8"):
        RestoreOptions(tile=0)
    with pytest.raises(ValueError, match="^overwrite: "):
        RestoreOptions(overwrite=True, skip_existing=True)
    assert RestoreOptions(qf="40").qf == 40 and RestoreOptions(qf=None).qf == "auto"


def test_one_job_restores_refuses_an_existing_output_and_records_errors(tmp_path):
    [source] = jpegs(tmp_path, 1)
    job = Job(source, tmp_path / "out.tiff")
    options = RestoreOptions(qf=30)
    restorer = make_restorer(options)
    record = restore_file(job, restorer, options)
    assert record["qf"] == 30 and record["qf_source"] == "given" and record["size"] == [96, 64]
    with Image.open(job.target) as written:
        assert written.format == "TIFF"
    with pytest.raises(OutputExists, match="--overwrite"):
        restore_file(job, restorer, options)
    assert restore_one(job, restorer, RestoreOptions(qf=30, skip_existing=True))["skipped"].startswith("output exists")
    broken = Job(tmp_path / "gone.jpg", tmp_path / "gone.png")
    failed = restore_one(broken, restorer, options)
    assert str(broken.source) in failed["error"] and not broken.target.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tiff", "shot0.jpg"]


def test_a_plan_refuses_before_any_work_and_leaves_earlier_outputs_out(tmp_path):
    [source] = jpegs(tmp_path, 1)
    with pytest.raises(PlanError, match="replace the input"):
        plan_batch([source], output=source)
    with pytest.raises(TypeError):
        plan_batch(str(source))  # one string is not a list of inputs
    report = run_plan(plan_batch([tmp_path]), RestoreOptions(qf=30))
    assert report.restored == 1 and report.to_dict()["restored"] == 1
    replan = plan_batch([tmp_path], skip_existing=True)
    assert replan.jobs == [] and replan.skip_existing
    assert {r["skipped"] for r in replan.skipped} == {"output exists", f"the output of {source} in this run"}
