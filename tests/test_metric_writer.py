"""vdsr_jax.metric_writer: metrics.jsonl rows as written (strict JSON), a resume dropping the rows after its step,
the plot, TensorBoard events, and the logs without tensorboardX."""
import math
import struct
import sys

import numpy as np
import pytest
from PIL import Image

from vdsr_jax.metric_writer import MetricWriter

NOTE = "TensorBoard logs are off: tensorboardX is not installed (pip install tensorboardX)"


def lines(workdir) -> list[str]:
    return (workdir / "metrics.jsonl").read_text().splitlines()


def event_file_records(folder) -> list:
    """Every Event in the TFRecord files of `folder`: per record, an 8-byte length, its 4-byte CRC, the Event
    protocol buffer, its 4-byte CRC."""
    from tensorboardX.proto.event_pb2 import Event

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, at = path.read_bytes(), 0
        while at < len(data):
            (size,) = struct.unpack_from("<Q", data, at)
            events.append(Event.FromString(data[at + 12:at + 12 + size]))
            at += 12 + size + 4
    return events


def scalars(events) -> list[tuple[int, str, float]]:
    return [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]


def starts(events) -> list[int]:
    """The steps of the session START events, from which TensorBoard drops earlier sessions' events."""
    return [e.step for e in events if e.HasField("session_log")]


@pytest.fixture
def no_tensorboardx(monkeypatch):
    """tensorboardX as if not installed (the writer imports it when constructed)."""
    monkeypatch.setitem(sys.modules, "tensorboardX", None)


def test_rows_are_written_as_given_one_strict_json_line_each(tmp_path, no_tensorboardx):
    writer = MetricWriter(tmp_path / "run")  # the workdir is made
    writer.write(np.int64(5), {"loss": np.float32(0.5), "lr": 0.1})
    writer.write(10, {"psnr/set5": float("inf"), "bicubic_psnr/set5": float("-inf"), "loss": float("nan")})
    writer.close()
    assert lines(tmp_path / "run") == [
        '{"step": 5, "loss": 0.5, "lr": 0.1}',
        '{"step": 10, "psnr/set5": "inf", "bicubic_psnr/set5": "-inf", "loss": "nan"}',
    ]


def test_a_resume_keeps_the_rows_up_to_its_step_and_reads_the_strings_back_as_floats(tmp_path, no_tensorboardx):
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 10, "loss": 0.5}\n{"step": 20, "loss": "nan", "psnr/a": "inf"}\n'
        '{"step": 30, "loss": 0.25}\n{"step": 40, "loss": 0.125}\n')
    writer = MetricWriter(tmp_path, resume_step=20)
    # the file is cut back at once, before the resumed run writes anything
    assert lines(tmp_path) == ['{"step": 10, "loss": 0.5}', '{"step": 20, "loss": "nan", "psnr/a": "inf"}']
    assert [r["step"] for r in writer.history] == [10, 20]
    assert math.isnan(writer.history[1]["loss"]) and writer.history[1]["psnr/a"] == math.inf
    writer.write(21, {"loss": 0.375})
    assert lines(tmp_path)[2:] == ['{"step": 21, "loss": 0.375}']
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.jsonl"]  # no temporary file left


def test_a_fresh_run_starts_the_rows_again(tmp_path, no_tensorboardx):
    (tmp_path / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n')
    assert MetricWriter(tmp_path).history == []
    assert lines(tmp_path) == []


def test_a_line_cut_short_by_a_kill_and_those_after_it_are_dropped(tmp_path, no_tensorboardx):
    (tmp_path / "metrics.jsonl").write_text('{"step": 10, "loss": 0.5}\n{"step": 20, "lo')
    writer = MetricWriter(tmp_path, resume_step=20)
    assert writer.history == [{"step": 10, "loss": 0.5}]
    assert lines(tmp_path) == ['{"step": 10, "loss": 0.5}']


@pytest.mark.parametrize("rows", [[], [(1, {"loss": 2.0})], [
    (10, {"loss": 0.5}), (20, {"loss": 0.25, "psnr/a": 30.0, "bicubic_psnr/a": 28.0, "psnr/b": math.inf})]],
    ids=["no-rows", "loss-only", "loss-and-psnr"])
def test_the_plot_is_a_png_written_atomically(tmp_path, no_tensorboardx, rows):
    writer = MetricWriter(tmp_path)
    for step, values in rows:
        writer.write(step, values)
    path = writer.plot()
    assert path == tmp_path / "training.png"
    with Image.open(path) as image:
        assert image.format == "PNG" and image.size == (990, 360)  # 11 × 4 inches at 90 dpi
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.jsonl", "training.png"]


def test_without_tensorboardx_the_note_is_said_once_and_the_other_logs_are_written(tmp_path, no_tensorboardx,
                                                                                     capsys):
    writer = MetricWriter(tmp_path)
    assert writer.tensorboard is None
    for step in (1, 2, 3):
        writer.write(step, {"loss": 1.0 / step})
    writer.plot()
    writer.close()
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [NOTE] and captured.out == ""
    assert len(lines(tmp_path)) == 3 and (tmp_path / "training.png").is_file()
    assert not (tmp_path / "tensorboard").exists()


def test_a_broken_tensorboardx_is_not_taken_for_a_missing_one(tmp_path, monkeypatch):
    # a tensorboardX whose own import fails on a missing dependency: that error, not the note
    (tmp_path / "lib" / "tensorboardX").mkdir(parents=True)
    (tmp_path / "lib" / "tensorboardX" / "__init__.py").write_text("import a_dependency_that_is_not_installed\n")
    monkeypatch.syspath_prepend(tmp_path / "lib")
    monkeypatch.delitem(sys.modules, "tensorboardX", raising=False)
    with pytest.raises(ModuleNotFoundError) as error:
        MetricWriter(tmp_path / "run")
    assert error.value.name == "a_dependency_that_is_not_installed"


def test_tensorboard_events_hold_the_scalars_and_a_resume_purges_after_its_step(tmp_path, capsys):
    pytest.importorskip("tensorboardX")
    writer = MetricWriter(tmp_path)
    writer.write(10, {"loss": 0.5})
    writer.write(20, {"loss": 0.25, "psnr/a": 30.5})
    writer.close()
    first = event_file_records(tmp_path / "tensorboard")
    assert scalars(first) == [(10, "loss", 0.5), (20, "loss", 0.25), (20, "psnr/a", 30.5)]
    assert starts(first) == [1]

    resumed = MetricWriter(tmp_path, resume_step=10)
    resumed.write(11, {"loss": 0.375})
    resumed.close()
    # the resumed writer's events (a new file; within the same second, one of the same name)
    later = [e for e in event_file_records(tmp_path / "tensorboard") if e.wall_time > first[-1].wall_time]
    # TensorBoard drops the events at and after a session's START step: those after step 10 of the first run
    assert starts(later) == [11]
    assert scalars(later) == [(11, "loss", 0.375)]
    assert capsys.readouterr().err == ""

