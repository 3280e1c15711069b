"""SQLite's write-ahead log is copied back into the database file by the server's background
checkpointer, never inside a commit: a commit that checkpoints holds the write lock, and every
writer queued for it, while pages are copied and synced."""

from __future__ import annotations

import asyncio
import multiprocessing
import sqlite3
from pathlib import Path

from sqlalchemy import text

from clinicsync.db.engine import WalCheckpointer, create_engine, create_sessionmaker, session_scope

PAGES_PAST_AUTOCHECKPOINT = 3_000  # SQLite's own checkpoint runs in the commit past 1,000 pages


async def _frames_left_by_commits(path: Path, *, background_checkpoints: bool) -> int:
    """Writes well past SQLite's checkpoint threshold; answers the frames its commits left in the log."""
    engine = create_engine(f"sqlite:///{path}", background_checkpoints=background_checkpoints)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            await session.execute(text("CREATE TABLE filler (body BLOB)"))
        for _ in range(PAGES_PAST_AUTOCHECKPOINT // 100):
            async with session_scope(create_sessionmaker(engine)) as session:
                await session.execute(text("INSERT INTO filler (body) VALUES (randomblob(4000))"), [{}] * 100)
        # Read while the engine's connections are open: the last one to close checkpoints itself.
        return _log_frames(path)
    finally:
        await engine.dispose()


def _log_frames(path: Path) -> int:
    """Frames in the log; a PASSIVE checkpoint also reports them, and copies what it can."""
    connection = sqlite3.connect(path)
    try:
        _busy, log_frames, _checkpointed = connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        return int(log_frames)
    finally:
        connection.close()


async def test_commits_leave_the_log_to_the_background_checkpointer(tmp_path: Path) -> None:
    in_commits = await _frames_left_by_commits(tmp_path / "commits.sqlite3", background_checkpoints=False)
    left = await _frames_left_by_commits(tmp_path / "background.sqlite3", background_checkpoints=True)
    # Checkpointing inside commits keeps restarting the log; with it off, the log holds every page.
    assert in_commits < 1_500
    assert left >= PAGES_PAST_AUTOCHECKPOINT


async def test_the_checkpointer_copies_the_log_into_the_database_file(tmp_path: Path) -> None:
    path = tmp_path / "served.sqlite3"
    engine = create_engine(f"sqlite:///{path}", background_checkpoints=True)
    checkpointer = WalCheckpointer(path, interval=0.05)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            await session.execute(text("CREATE TABLE filler (body BLOB)"))
            await session.execute(text("INSERT INTO filler (body) VALUES (randomblob(400000))"))
        size_before = path.stat().st_size
        checkpointer.start()
        for _ in range(100):
            if path.stat().st_size > size_before + 300_000:
                break
            await asyncio.sleep(0.05)
        assert path.stat().st_size > size_before + 300_000, "the log never reached the database file"
    finally:
        await checkpointer.stop()
        await engine.dispose()


def _stop_checkpointers_mid_pass(path: Path, rounds: int) -> None:
    """Starts and stops checkpointers while their passes have a log to copy (run in a process of
    its own: a connection closed under a running pass crashes the process, not an exception)."""
    writer = sqlite3.connect(path, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.execute("CREATE TABLE IF NOT EXISTS filler (body BLOB)")

    async def rounds_of_start_and_stop() -> None:
        for round_number in range(rounds):
            writer.executemany("INSERT INTO filler (body) VALUES (randomblob(4000))", [()] * 50)
            checkpointer = WalCheckpointer(path, interval=0)
            checkpointer.start()
            for _ in range(round_number % 4):  # stop at different points of the pass
                await asyncio.sleep(0)
            await checkpointer.stop()

    asyncio.run(rounds_of_start_and_stop())
    writer.close()


def test_stopping_the_checkpointer_waits_for_the_pass_under_way(tmp_path: Path) -> None:
    process = multiprocessing.get_context("spawn").Process(
        target=_stop_checkpointers_mid_pass, args=(tmp_path / "stopped.sqlite3", 300)
    )
    process.start()
    process.join(timeout=120)
    assert process.exitcode == 0, f"the process ended with {process.exitcode} (a negative code is a signal)"
