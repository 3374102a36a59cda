"""Reading scalars from TensorBoard event files, saying what was read and what was not.

TensorBoard's own reader stops at the first damaged record and drops the rest of the file without a
word. Here each record's two CRCs are checked; after a damaged stretch the reader finds the next intact
record and goes on, and every file gets a `FileReport` naming the records read and the bytes skipped.

A file is a sequence of TFRecords: ``uint64 length``, ``uint32 masked_crc32c(length)``, ``data``,
``uint32 masked_crc32c(data)``, each data an ``Event`` proto. A ``SessionLog.START`` event at step s
(what ``SummaryWriter(purge_step=s)`` writes on a resume) drops the points at steps >= s read before
it, as TensorBoard does.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rl_plasticity.experiment.run_directory import RunDirectory

_HEADER = 12  # length (8) + its CRC (4)
_FOOTER = 4


@dataclass
class FileReport:
    """What reading one event file found."""

    path: Path
    size: int
    records: int = 0
    scalars: int = 0
    skipped_bytes: int = 0
    problems: list[str] = field(default_factory=list)
    restarts: list[int] = field(default_factory=list)  # steps of SessionLog.START events

    def describe(self) -> str:
        read = f"{self.records} records ({self.scalars} scalar points) of {self.size:,} bytes"
        if not self.problems:
            return f"{self.path}: read {read}"
        return f"{self.path}: read {read}; skipped {self.skipped_bytes:,} bytes: {'; '.join(self.problems)}"


def _masked_crc(data: bytes) -> int:
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    return masked_crc32c(data)


def _record_at(blob: bytes, offset: int) -> tuple[bytes, int] | str:
    """The record's data and the offset after it, or why there is no intact record at ``offset``."""
    if len(blob) - offset < _HEADER:
        return "truncated record header"
    header = blob[offset:offset + 8]
    (length,) = struct.unpack("<Q", header)
    (header_crc,) = struct.unpack("<I", blob[offset + 8:offset + 12])
    if _masked_crc(header) != header_crc:
        return "record header fails its CRC"
    end = offset + _HEADER + length
    if end + _FOOTER > len(blob):
        return "truncated record (the file ends inside it)"
    data = blob[offset + _HEADER:end]
    (data_crc,) = struct.unpack("<I", blob[end:end + _FOOTER])
    if _masked_crc(data) != data_crc:
        return "record data fails its CRC"
    return data, end + _FOOTER


def _records(blob: bytes, report: FileReport):
    offset = 0
    while offset < len(blob):
        found = _record_at(blob, offset)
        if isinstance(found, tuple):
            data, offset = found
            yield data
            continue
        # Damaged: look for the next offset at which an intact record starts.
        start, reason = offset, found
        offset += 1
        while offset < len(blob) and not isinstance(_record_at(blob, offset), tuple):
            offset += 1
        report.skipped_bytes += offset - start
        report.problems.append(f"{reason} at byte {start:,} ({offset - start:,} bytes passed over)")


def read_scalars(path: Path) -> tuple[dict[str, list[tuple[int, float, float]]], FileReport]:
    """``tag -> [(step, wall_time, value), ...]`` in file order, and the file's report."""
    from tensorboard.compat.proto import event_pb2
    from tensorboard.util import tensor_util

    blob = Path(path).read_bytes()
    report = FileReport(Path(path), len(blob))
    points: dict[str, list[tuple[int, float, float]]] = {}
    for data in _records(blob, report):
        event = event_pb2.Event()
        try:
            event.ParseFromString(data)
        except Exception:  # protobuf's DecodeError; an intact CRC makes this rare
            report.problems.append("a record that is not an event")
            continue
        report.records += 1
        if event.HasField("session_log") and event.session_log.status == event_pb2.SessionLog.START:
            report.restarts.append(int(event.step))
            for tag, series in points.items():
                points[tag] = [p for p in series if p[0] < event.step]
        for value in event.summary.value:
            if value.HasField("simple_value"):
                number = float(value.simple_value)
            elif value.HasField("tensor") and value.metadata.plugin_data.plugin_name == "scalars":
                number = float(tensor_util.make_ndarray(value.tensor).item())
            else:
                continue
            points.setdefault(value.tag, []).append((int(event.step), float(event.wall_time), number))
            report.scalars += 1
    if report.size == 0:
        report.problems.append("the file is empty")
    elif report.records == 0 and not report.problems:
        report.problems.append("no event records")
    return points, report


def read_run_scalars(run_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
                                             list[FileReport]]:
    """Every event file of a run directory, in name (= creation time) order, merged: ``tag -> (steps,
    wall_times, values)`` sorted by step; a later file's restart purges the earlier files' later points."""
    merged: dict[str, list[tuple[int, float, float]]] = {}
    reports = []
    for path in RunDirectory(run_dir).event_files():
        points, report = read_scalars(path)
        reports.append(report)
        for purge in report.restarts:
            merged = {tag: [p for p in series if p[0] < purge] for tag, series in merged.items()}
        for tag, series in points.items():
            merged.setdefault(tag, []).extend(series)
    arrays = {}
    for tag, series in merged.items():
        series.sort(key=lambda p: p[0])
        steps, walls, values = (np.array(column) for column in zip(*series, strict=True)) if series else \
            (np.empty(0, np.int64), np.empty(0), np.empty(0))
        arrays[tag] = (steps.astype(np.int64), walls.astype(np.float64), values.astype(np.float64))
    return arrays, reports
