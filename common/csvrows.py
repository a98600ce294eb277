"""Rows as CSV in PostgreSQL's COPY dialect, for the databases that have no COPY: the same
bytes parse the same way whichever database produced them. No Django here."""

from collections.abc import Iterable, Iterator


def _field(value) -> str:
    if value is None:
        return ""  # unquoted empty: NULL, as COPY writes it
    if isinstance(value, str):
        # Always quoted, so an empty string stays distinct from NULL.
        return '"' + value.replace('"', '""') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def csv_line(row: Iterable) -> str:
    return ",".join(_field(value) for value in row) + "\n"


def csv_chunks(rows: Iterable[Iterable], *, chunk_bytes: int) -> Iterator[bytes]:
    """CSV of `rows` in chunks of about `chunk_bytes`, each ending at a row boundary."""
    lines: list[str] = []
    size = 0
    for row in rows:
        line = csv_line(row)
        lines.append(line)
        size += len(line)
        if size >= chunk_bytes:
            yield "".join(lines).encode()
            lines, size = [], 0
    if lines:
        yield "".join(lines).encode()
