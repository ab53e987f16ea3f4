"""The label CSV of recorded data sources (`file,label[,subject]`), read once for all readers."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path

from mdvq.core.errors import DataError


def read_label_rows(path: Path) -> Iterator[tuple[str, str, str, str | None]]:
    """Rows of a label CSV as `(where, file key, label text, subject or None)`: `where` is
    "line N" for messages, the file key uses "/" separators. DataError naming the CSV for a
    missing file, missing columns or an empty file name."""
    if not path.is_file():
        raise DataError(path, "labels_csv not found")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in reader.fieldnames or []]
        reader.fieldnames = fields
        if "file" not in fields or "label" not in fields:
            raise DataError(path, f"needs columns 'file,label[,subject]', found {fields}")
        for row in reader:
            where = f"line {reader.line_num}"
            key = (row["file"] or "").strip().replace("\\", "/")
            if not key:
                raise DataError(path, f"{where}: empty file name")
            yield where, key, (row["label"] or "").strip(), (row.get("subject") or "").strip() or None
