"""Many rows into one table through the driver's own ``executemany``.

A Core ``insert(table)`` with a list of dicts prepares every row in Python (parameter
names, type processing of each value) before the driver sees it: about 15 µs a row, more
than SQLite takes to store it. A poll stores about 56 near-duplicate bucket rows per new
entry, so that preparation was a third of the cost of saving a first fetch. Here the
caller hands rows as tuples already in the driver's form (``processor`` converts a value
the way the column's type would) and the driver binds them in C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Column, Table
from sqlalchemy.orm import Session


def processor(s: Session, column: Column[Any]) -> Callable[[Any], Any]:
    """What the column's type does to a value before the driver gets it, on this store."""
    dialect = s.get_bind().dialect
    # The type as this dialect runs it: a TypeDecorator's own bind_processor wraps the
    # generic impl (a DateTime left as a datetime object), not SQLite's text form.
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def insert_many(
    s: Session, table: Table, columns: Sequence[Column[Any]], rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT ``rows`` (tuples in ``columns`` order, values in the driver's form)."""
    if not rows:
        return
    conn = s.connection()
    quote = conn.dialect.identifier_preparer
    # SQLite's driver takes "?"; psycopg's "%s" (its format and pyformat styles both).
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = (
        f"INSERT INTO {quote.format_table(table)} "
        f"({', '.join(quote.format_column(c) for c in columns)}) "
        f"VALUES ({', '.join([mark] * len(columns))})"
    )
    conn.exec_driver_sql(sql, list(rows))
