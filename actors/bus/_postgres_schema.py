"""The PostgreSQL store's schema and its migrations, applied on first use.

The tables live in their own PostgreSQL schema (``trio_lanes`` unless told otherwise), so a
store shares a database with an application without touching its tables. Times are integer
microseconds since the Unix epoch (exact, like the SQLite store's); the row layouts match the
SQLite store's, so both read rows with the same converters (`_sqlite_schema`).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from ._sql_store import apply_migrations

#: Schema migrations, applied in order; ``schema_version`` holds how many ran.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE chains (
            chain_id TEXT PRIMARY KEY,
            dispatch_id TEXT NOT NULL,
            queue TEXT NOT NULL,
            length INTEGER NOT NULL,
            next_index INTEGER NOT NULL,
            completed BOOLEAN NOT NULL,
            failed BOOLEAN NOT NULL,
            failure TEXT,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )""",
        """CREATE TABLE chain_nodes (
            chain_id TEXT NOT NULL,
            idx INTEGER NOT NULL,
            job_id TEXT NOT NULL,
            job_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            queue TEXT NOT NULL,
            delay DOUBLE PRECISION NOT NULL,
            timeout DOUBLE PRECISION,
            retry INTEGER NOT NULL,
            backoff DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (chain_id, idx)
        )""",
        """CREATE TABLE batches (
            batch_id TEXT PRIMARY KEY,
            dispatch_id TEXT NOT NULL,
            name TEXT,
            queue TEXT NOT NULL,
            allow_failures BOOLEAN NOT NULL,
            total INTEGER NOT NULL,
            pending INTEGER NOT NULL,
            processed INTEGER NOT NULL,
            failed INTEGER NOT NULL,
            cancelled BOOLEAN NOT NULL,
            completed BOOLEAN NOT NULL,
            created_at BIGINT NOT NULL,
            updated_at BIGINT NOT NULL
        )""",
        """CREATE TABLE batch_jobs (
            batch_id TEXT NOT NULL,
            job_id TEXT NOT NULL,
            status TEXT NOT NULL,
            job_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            queue TEXT NOT NULL,
            delay DOUBLE PRECISION NOT NULL,
            timeout DOUBLE PRECISION,
            retry INTEGER NOT NULL,
            backoff DOUBLE PRECISION NOT NULL,
            PRIMARY KEY (batch_id, job_id)
        )""",
        """CREATE TABLE callbacks (
            key TEXT PRIMARY KEY,
            owner TEXT NOT NULL,
            invoked_at BIGINT NOT NULL
        )""",
        "CREATE INDEX callbacks_owner ON callbacks (owner)",
        """CREATE TABLE uniques (
            key TEXT PRIMARY KEY,
            expires_at BIGINT NOT NULL
        )""",
        "CREATE INDEX batches_done ON batches (completed, updated_at)",
        "CREATE INDEX chains_done ON chains (updated_at)",
        """CREATE TABLE failed_jobs (
            id TEXT PRIMARY KEY,
            seq BIGSERIAL NOT NULL,
            job_type TEXT NOT NULL,
            payload TEXT NOT NULL,
            queue TEXT NOT NULL,
            error TEXT NOT NULL,
            traceback TEXT NOT NULL,
            attempts INTEGER NOT NULL,
            failed_at BIGINT NOT NULL,
            job TEXT NOT NULL
        )""",
        "CREATE INDEX failed_jobs_at ON failed_jobs (failed_at, seq)",
        """CREATE TABLE job_callbacks (
            owner TEXT NOT NULL,
            name TEXT NOT NULL,
            job TEXT NOT NULL,
            PRIMARY KEY (owner, name)
        )""",
    ),
    (  # lane jobs in chains and batches: a stored job keeps its lane key; lane fences
        "ALTER TABLE chain_nodes ADD COLUMN lane TEXT",
        "ALTER TABLE batch_jobs ADD COLUMN lane TEXT",
        # the highest lane fence recorded with, per lane (`_fences`)
        """CREATE TABLE lane_fences (
            queue TEXT NOT NULL,
            lane TEXT NOT NULL,
            fence BIGINT NOT NULL,
            PRIMARY KEY (queue, lane)
        )""",
    ),
)


def use_schema(conn: psycopg.Connection[Any], schema: str) -> None:
    """Point the connection's ``search_path`` at the store's schema (every new connection)."""
    conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))


def migrate(conn: psycopg.Connection[Any], schema: str) -> int:
    """Create or bring the schema up to date; return its version.

    One transaction under an advisory lock named after the schema, so two processes opening
    a new database at once take turns: the second finds the work done.
    """
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"trio_lanes:{schema}",))
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        use_schema(conn, schema)
        version = apply_migrations(conn, MIGRATIONS, "%s")
    return version
