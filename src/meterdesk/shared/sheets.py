"""Reading a spreadsheet-like file (CSV here; Excel in ``billing.presets``) as rows under a
header, each with the line the user sees it on, refusing whole a file that would be misread."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path

from meterdesk.shared.errors import ValidationError
from meterdesk.shared.text import control_character_in_one_line


class SheetRow(dict[str, str]):
    """One data row of an import file by column name, with the line (CSV) or row (Excel) it
    starts on, so that the report names the row the user sees even after blank rows."""

    def __init__(self, line: int, cells: dict[str, str]) -> None:
        super().__init__(cells)
        self.line = line


def csv_lines(path: Path) -> list[tuple[int, list[str]]]:
    """Every record of a UTF-8 CSV file (a BOM allowed) with the line it starts on."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValidationError(
            f"{path.name}: line {line} is not UTF-8 text (save the file as 'CSV UTF-8')"
        ) from None
    reader = csv.reader(io.StringIO(text, newline=""))
    lines: list[tuple[int, list[str]]] = []
    end = 0  # the last line of the previous record (a quoted cell may span lines)
    try:
        for cells in reader:  # blank lines come as [], so every line is counted
            lines.append((end + 1, cells))
            end = reader.line_num
    except csv.Error as error:
        raise ValidationError(f"{path.name}: line {reader.line_num}: {error}") from None
    return lines


def table(lines: list[tuple[int, list[str]]], name: str, columns: Sequence[str]) -> list[SheetRow]:
    """The rows under the header (the first non-empty line), by lower-cased column name.

    Refused whole, with the line to fix: a column not in ``columns`` (a misspelt one was
    ignored, and its values with it), a column named twice, a value in a column without a name,
    a control character in any cell."""
    filled = [(line, cells) for line, cells in lines if any(cell.strip() for cell in cells)]
    if not filled:
        return []
    (header_line, header), data = filled[0], filled[1:]
    names = [cell.strip().lower() for cell in header]
    unknown = [column for column in names if column and column not in columns]
    if unknown:
        raise ValidationError(
            f"{name}: line {header_line}: unknown column {unknown[0]!r} "
            f"(the columns are {', '.join(columns)})"
        )
    twice = [column for column in names if column and names.count(column) > 1]
    if twice:
        raise ValidationError(f"{name}: line {header_line}: column {twice[0]!r} appears twice")
    rows = []
    for line, cells in data:
        stray = [
            cell
            for at, cell in enumerate(cells)
            if cell.strip() and (at >= len(names) or not names[at])
        ]
        if stray:
            raise ValidationError(
                f"{name}: line {line}: {stray[0]!r} is in a column without a name"
            )
        spoilt = [found for cell in cells if (found := control_character_in_one_line(cell))]
        if spoilt:  # NUL cannot even be stored on PostgreSQL
            raise ValidationError(
                f"{name}: line {line}: a control character ({spoilt[0]}) is not allowed"
            )
        rows.append(
            SheetRow(  # a short row has its missing cells empty
                line, {column: (cells[at:] or [""])[0] for at, column in enumerate(names) if column}
            )
        )
    return rows
