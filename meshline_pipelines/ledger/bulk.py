"""PostgreSQL bulk path for canonical upserts: COPY into a staging table, then one merge.

It applies the same version rules as the generic path in `store.py` (absorbed, stale, conflict,
updated, inserted), in SQL, so a partition of any size costs one COPY and two statements.
"""

import pandas as pd
import sqlalchemy as sa

from meshline_pipelines.ledger.tables import KEY_COLUMNS

NULL_MARKER = r"\N"
# Characters that COPY's text format escapes with a backslash.
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})
TIMESTAMP_VERSION = r"'^[0-9]{4}-[0-9]{2}-[0-9]{2}T'"
# Versions compare byte-wise, as the generic path compares Python strings, whatever the collation.
BYTEWISE = 'COLLATE "C"'


def _decision_sql(staging: str, target: str) -> str:
    keys = " AND ".join(f"t.{column} = s.{column}" for column in KEY_COLUMNS)
    both_timestamps = f"s.version ~ {TIMESTAMP_VERSION} AND t.version ~ {TIMESTAMP_VERSION}"
    return f"""
        SELECT s.system, s.account, s.source_id, s.version, t.version AS stored_version,
               t.partition_key AS stored_partition_key,
               CASE
                   WHEN t.source_id IS NULL THEN 'inserted'
                   WHEN t.content_hash = s.content_hash THEN 'absorbed'
                   WHEN {both_timestamps} AND s.version {BYTEWISE} < t.version THEN 'stale'
                   WHEN {both_timestamps} AND s.version = t.version THEN 'conflict'
                   WHEN NOT ({both_timestamps}) AND s.partition_key {BYTEWISE} < t.partition_key THEN 'stale'
                   ELSE 'updated'
               END AS decision
        FROM {staging} AS s LEFT JOIN {target} AS t ON {keys}
    """


def _merge_sql(staging: str, target: sa.Table, columns: list[str]) -> str:
    column_list = ", ".join(columns)
    updates = ", ".join(f"{column} = EXCLUDED.{column}" for column in columns if column not in KEY_COLUMNS)
    existing = target.name
    both_timestamps = (f"EXCLUDED.version ~ {TIMESTAMP_VERSION} AND {existing}.version ~ {TIMESTAMP_VERSION}")
    return f"""
        INSERT INTO {existing} ({column_list})
        SELECT {column_list} FROM {staging}
        ON CONFLICT ({", ".join(KEY_COLUMNS)}) DO UPDATE SET {updates}
        WHERE {existing}.content_hash <> EXCLUDED.content_hash
          AND NOT ({both_timestamps} AND EXCLUDED.version {BYTEWISE} <= {existing}.version)
          AND NOT (NOT ({both_timestamps}) AND EXCLUDED.partition_key {BYTEWISE} < {existing}.partition_key)
    """


def _copy_text(rows: pd.DataFrame) -> str:
    """Render rows in COPY's text format: tab-separated, \\N for NULL, backslash escapes in text."""
    columns = []
    for name in rows.columns:
        values = rows[name]
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            text = values.dt.tz_convert("UTC").dt.strftime("%Y-%m-%d %H:%M:%S.%f+00")
        elif str(values.dtype) == "boolean":
            text = values.map({True: "t", False: "f"}).astype("string")
        else:
            text = values.astype("string").str.translate(COPY_ESCAPES)
        columns.append(text.astype("string").fillna(NULL_MARKER))
    lines = columns[0].str.cat(columns[1:], sep="\t")
    return "\n".join(lines) + "\n"


def copy_rows(connection: sa.Connection, table: sa.Table, rows: pd.DataFrame) -> None:
    """Append rows with COPY; columns missing from `rows` take their defaults (such as `id`)."""
    columns = [column.name for column in table.columns if column.name in rows.columns]
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {table.name} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(_copy_text(rows[columns]))


def copy_new_rows(connection: sa.Connection, table: sa.Table, rows: pd.DataFrame, unique_columns: list[str]) -> int:
    """Stage rows with COPY and insert those not stored yet by `unique_columns`; return how many were new."""
    staging = f"staging_{table.name}"
    columns = [column.name for column in table.columns if column.name in rows.columns]
    connection.execute(sa.text(
        f"CREATE TEMPORARY TABLE {staging} ON COMMIT DROP AS SELECT {', '.join(columns)} FROM {table.name} WITH NO DATA"
    ))
    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {staging} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(_copy_text(rows[columns]))
    inserted = connection.execute(sa.text(
        f"INSERT INTO {table.name} ({', '.join(columns)}) SELECT {', '.join(columns)} FROM {staging} "
        f"ON CONFLICT ({', '.join(unique_columns)}) DO NOTHING"
    )).rowcount
    connection.execute(sa.text(f"DROP TABLE {staging}"))
    return inserted


def copy_and_merge(connection: sa.Connection, table: sa.Table, rows: pd.DataFrame) -> pd.DataFrame:
    """Stage `rows` (all of the table's columns) with COPY and merge them; return one decision per row."""
    staging = f"staging_{table.name}"
    columns = [column.name for column in table.columns]
    connection.execute(sa.text(f"CREATE TEMPORARY TABLE {staging} (LIKE {table.name}) ON COMMIT DROP"))

    cursor = connection.connection.driver_connection.cursor()
    with cursor.copy(f"COPY {staging} ({', '.join(columns)}) FROM STDIN") as copy:
        copy.write(_copy_text(rows[columns]))

    # A fresh temporary table has no statistics; without them the planner may join by nested loop.
    connection.execute(sa.text(f"ANALYZE {staging}"))
    decided = connection.execute(sa.text(_decision_sql(staging, table.name))).all()
    connection.execute(sa.text(_merge_sql(staging, table, columns)))
    connection.execute(sa.text(f"DROP TABLE {staging}"))
    return pd.DataFrame(decided, columns=[*KEY_COLUMNS, "version", "stored_version", "stored_partition_key",
                                          "decision"])
