"""Many rows in or out of one table through the driver, for the few hot statements.

A Core ``insert(table)`` with a list of dicts prepares every row in Python (parameter
names, type processing of each value) before the driver sees it: about 15 µs a row, more
than SQLite takes to store it. A poll stores about 56 near-duplicate bucket rows per new
entry, so that preparation was a third of the cost of saving a first fetch. Likewise a
Core ``column.in_(values)`` coerces and renders each of a poll's ~1,100 bucket keys in
Python, and the near-duplicate lookup needs a bounded read per key, which Core does not
express on both stores alike. Here the caller hands values already in the driver's form
(``processor`` converts one the way the column's type would; ``reader`` converts one read
back) and the driver binds them in C.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Connection, Table
from sqlalchemy.orm import Session


def processor(s: Session, column: Column[Any]) -> Callable[[Any], Any]:
    """What the column's type does to a value before the driver gets it, on this store."""
    dialect = s.get_bind().dialect
    # The type as this dialect runs it: a TypeDecorator's own bind_processor wraps the
    # generic impl (a DateTime left as a datetime object), not SQLite's text form.
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return process if process is not None else _same


def reader(s: Session, column: Column[Any]) -> Callable[[Any], Any]:
    """What the column's type does to a value the driver read, on this store."""
    dialect = s.get_bind().dialect
    process = column.type.dialect_impl(dialect).result_processor(dialect, None)
    return process if process is not None else _same


def _same(value: Any) -> Any:
    return value


def _mark(s: Session) -> str:
    # SQLite's driver takes "?"; psycopg's "%s" (its format and pyformat styles both).
    return "?" if s.get_bind().dialect.paramstyle == "qmark" else "%s"


def select_newest_per_key(
    s: Session,
    columns: Sequence[Column[Any]],
    key: Column[Any],
    values: Sequence[Any],
    order: Column[Any],
    lo: Any,
    hi: Any,
    per_key: int,
    chunk: int = 250,
) -> list[tuple[Any, ...]]:
    """For each of ``values``: the ``per_key`` rows of largest ``order`` (within
    ``lo <= order <= hi``) of ``key``'s table whose ``key`` equals it.

    Each key is a bounded index range scan, read newest first, so a key with thousands of
    rows costs what one with ``per_key`` rows costs: on PostgreSQL a LATERAL subquery per
    element of one array, on SQLite a UNION ALL of one limited subquery per key (at most
    ``chunk`` keys a statement, under SQLite's 500-term limit on compound selects).
    """
    if not values:
        return []
    conn = s.connection()
    quote = conn.dialect.identifier_preparer
    mark = _mark(s)
    cols = ", ".join(quote.format_column(c) for c in columns)
    o, k = quote.format_column(order), quote.format_column(key)
    one = (
        f"SELECT {cols} FROM {quote.format_table(key.table)} WHERE {k} = {{key}} "
        f"AND {o} >= {mark} AND {o} <= {mark} ORDER BY {o} DESC LIMIT {int(per_key)}"
    )
    if conn.dialect.name == "postgresql":
        sql = (
            f"SELECT r.* FROM unnest({mark}::{_array_type(conn, key)}) AS q(k) "
            f"CROSS JOIN LATERAL ({one.format(key='q.k')}) AS r"
        )
        return [tuple(row) for row in conn.exec_driver_sql(sql, (_pg_array(values), lo, hi))]
    out: list[tuple[Any, ...]] = []
    term = f"SELECT * FROM ({one.format(key=mark)})"
    for i in range(0, len(values), chunk):
        part = values[i : i + chunk]
        sql = " UNION ALL ".join([term] * len(part))
        params: list[Any] = []
        for v in part:
            params += (v, lo, hi)
        out += [tuple(row) for row in conn.exec_driver_sql(sql, tuple(params))]
    return out


def insert_many(
    s: Session, table: Table, columns: Sequence[Column[Any]], rows: Sequence[tuple[Any, ...]]
) -> None:
    """INSERT ``rows`` (tuples in ``columns`` order, values in the driver's form)."""
    if not rows:
        return
    conn = s.connection()
    quote = conn.dialect.identifier_preparer
    head = (
        f"INSERT INTO {quote.format_table(table)} "
        f"({', '.join(quote.format_column(c) for c in columns)}) "
    )
    if conn.dialect.name == "postgresql":
        # One statement with a column array each: an executemany is one statement per
        # row for the server to run, and psycopg adapts each row's values on its own.
        arrays = ", ".join(f"%s::{_array_type(conn, c)}" for c in columns)
        by_column = tuple(_pg_array(list(col)) for col in zip(*rows, strict=True))
        conn.exec_driver_sql(f"{head}SELECT * FROM unnest({arrays})", by_column)
        return
    conn.exec_driver_sql(f"{head}VALUES ({', '.join([_mark(s)] * len(columns))})", list(rows))


def _array_type(conn: Connection, column: Column[Any]) -> str:
    return f"{column.type.compile(dialect=conn.dialect)}[]"


def _pg_array(values: Sequence[Any]) -> Any:
    """Integers or aware datetimes as one PostgreSQL array literal; anything else as is.

    psycopg adapts a list element by element in Python: about 1 µs an integer and 4 µs a
    datetime, 5 ms for a poll's bucket rows. The literal is one string, parsed by the
    server; an entry's rows share a date, so each distinct one is written once.
    """
    if all(type(v) is int for v in values):
        return "{" + ",".join(map(str, values)) + "}"
    if all(type(v) is datetime and v.tzinfo is not None for v in values):
        text: dict[datetime, str] = {}
        for v in values:
            if v not in text:
                text[v] = f'"{v.isoformat()}"'
        return "{" + ",".join([text[v] for v in values]) + "}"
    return list(values)
