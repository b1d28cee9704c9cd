"""Lane jobs on real worker processes: 3 workers, hundreds of lanes x tens of jobs.

Per lane: the effects in the store are exactly the lane's jobs, each once, in dispatch
order; no two runs that took effect overlap; a worker killed (SIGKILL) or paused past its
lease (SIGSTOP, then SIGCONT) loses nothing, and the paused one's late outcome is refused
(by the store's fence check, or by the broker's ack with `LeaseLost`).
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import sqlite3
import sys
from collections import defaultdict
from pathlib import Path
from typing import Protocol

import pytest
import trio

from actors.bus._model import QueuedJob
from tests.polling import until

from .lane_worker import create_store
from .test_faults import ROOT, Workers, drained, opened

LEASE = 0.5

#: How many pauses the fencing test tries before it gives up on a takeover.
PAUSES = 20

#: The longest a test waits for another process (the machine may be busy with other tests).
PATIENCE = 120.0


def lane_jobs(lanes: int, per_lane: int, first: int = 0) -> list[QueuedJob]:
    return [
        QueuedJob(
            job_id=f"L{lane}-{seq}",
            dispatch_id="d",
            job_type="t",
            payload=str(seq),
            queue="q",
            lane=f"L{lane}",
        )
        for lane in range(first, first + lanes)
        for seq in range(per_lane)
    ]


class LaneWorkers(Workers):
    def __init__(self, kind: str, place: str, folder: Path) -> None:
        super().__init__(kind, place, folder, visibility_timeout=LEASE)
        self.store = str(folder / "store.db")
        create_store(self.store)

    async def start(self, *extra: str) -> trio.Process:
        out = self.folder / f"runs-{len(self.processes)}.txt"
        argv = [sys.executable, "-m", "tests.actors.bus.brokers.lane_worker"]
        argv += [self.kind, self.place, self.queue, str(out), self.store]
        argv += ["--prefix", self.prefix, "--visibility-timeout", str(LEASE), *extra]
        process = await trio.lowlevel.open_process(argv, cwd=ROOT)
        self.processes.append(process)
        await until(lambda: out.exists() and out.read_text().startswith("ready"), PATIENCE)
        return process

    def records(self) -> list[list[str]]:
        return records_in(self.folder)

    def count(self, what: str) -> int:
        """Records of ``what``: ``refused``, or an ``end`` result such as ``stale``."""
        return sum(r[0] == what or (r[0] == "end" and r[6] == what) for r in self.records())

    def in_flight(self, process: trio.Process) -> bool:
        return in_flight(self.folder / f"runs-{self.processes.index(process)}.txt")


def records_in(folder: Path) -> list[list[str]]:
    """Every worker's records (``runs-N.txt`` in ``folder``), split into fields."""
    return [
        line.split()
        for out in sorted(folder.glob("runs-*.txt"))
        for line in out.read_text().splitlines()
        if line != "ready"
    ]


def in_flight(out: Path) -> bool:
    """True while the worker recording to ``out`` has started a run it has not ended."""
    lines = out.read_text().splitlines()
    return sum(x.startswith("start") for x in lines) > sum(x.startswith("end") for x in lines)


class Recorded(Protocol):
    """Where the workers' runs are: the effects file and each run's records."""

    store: str

    def records(self) -> list[list[str]]: ...


def check(workers: Recorded, lanes: int, per_lane: int) -> dict[str, int]:
    """Assert the lane guarantees on what the workers recorded; return counts to report."""
    with sqlite3.connect(workers.store) as conn:
        query = "SELECT lane, seq, fence, pid, t FROM effects ORDER BY id"
        effects = conn.execute(query).fetchall()
    per: dict[str, list[int]] = defaultdict(list)
    for lane, seq, *_ in effects:
        per[lane].append(seq)
    assert len(per) == lanes
    for lane, seqs in per.items():
        assert seqs == list(range(per_lane)), f"lane {lane}: effects {seqs}"
    records = workers.records()
    ends = [r for r in records if r[0] == "end"]
    # Runs that took effect on one lane never overlap: each such run starts after the
    # lane's previous effect committed (its time is read under the write lock: see
    # `lane_worker.apply`). A "dup" took none: a paused holder that wakes before its
    # successor's first fenced write still commits (the store has seen no newer fence yet),
    # and the successor then finds that effect applied. That is the limit of fencing: a
    # resource refuses only fences older than one it has seen.
    starts = {tuple(r[1:5]): float(r[5]) for r in records if r[0] == "start"}
    took = defaultdict(list)
    for lane, seq, fence, pid, t in effects:
        took[lane].append((starts[(lane, str(seq), str(fence), str(pid))], t, pid))
    for lane, runs in took.items():
        for before, after in itertools.pairwise(runs):
            assert before[1] <= after[0], f"lane {lane}: runs overlap {before} {after}"
    assert not [r for r in ends if r[6].startswith("gap")]
    return {
        "runs": len(ends),
        "stale": sum(r[6] == "stale" for r in ends),
        "dup": sum(r[6] == "dup" for r in ends),
        "refused": sum(r[0] == "refused" for r in records),
    }


def write_lock_free(path: str) -> bool:
    """Whether another process may take an SQLite file's write lock (for a moment) now."""
    conn = sqlite3.connect(path, timeout=0.01, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


async def pause_unlocked(workers: LaneWorkers, victim: trio.Process) -> None:
    """SIGSTOP ``victim`` while it runs a job and holds no SQLite write lock.

    A worker paused holding one (the broker's file or the store's; likelier the busier the
    machine) stops everyone: nobody can take its lanes over. So resume it at once and pause
    again. The others hold such a lock for milliseconds: one held through 25 polls, 10 ms
    apart, is the paused worker's.
    """
    files = [workers.store] + ([workers.place] if workers.kind == "sqlite" else [])
    with trio.fail_after(PATIENCE):
        while True:
            await until(lambda: workers.in_flight(victim), PATIENCE)
            os.kill(victim.pid, signal.SIGSTOP)
            for _ in range(25):
                if all(map(write_lock_free, files)):
                    return
                await trio.sleep(0.01)
            os.kill(victim.pid, signal.SIGCONT)
            await trio.sleep(0.02)


def unrefused_stale(records: list[list[str]]) -> list[list[str]]:
    """The runs whose write the store refused as stale but whose ack was not refused (yet)."""
    refused = {tuple(r[1:5]) for r in records if r[0] == "refused"}
    return [
        r for r in records if r[0] == "end" and r[6] == "stale" and tuple(r[1:5]) not in refused
    ]


def untaken_refused(records: list[list[str]]) -> list[list[str]]:
    """The refused acks of a job that was not delivered again with a newer fence."""
    fences = defaultdict(list)
    for r in records:
        if r[0] == "start":
            fences[(r[1], r[2])].append(int(r[3]))
    return [
        r
        for r in records
        if r[0] == "refused" and not any(f > int(r[3]) for f in fences[(r[1], r[2])])
    ]


async def test_lanes_survive_sigkills_in_order(kind: str, place: str, tmp_path: Path) -> None:
    lanes, per_lane = 200, 10
    workers = LaneWorkers(kind, place, tmp_path)
    try:
        async with opened(workers.broker()) as broker:
            for _ in range(3):
                await workers.start()
            await broker.queue(workers.queue).put(lane_jobs(lanes, per_lane))
            rng = random.Random()
            kills = 0
            while kills < 3:
                await trio.sleep(rng.uniform(0.3, 0.8))
                victim = rng.choice([p for p in workers.processes if p.returncode is None])
                victim.send_signal(signal.SIGKILL)
                await victim.wait()
                kills += 1
                await workers.start()
            await drained(broker, workers.queue, PATIENCE)
        counts = check(workers, lanes, per_lane)
        print(f"\n{kind}: {lanes}x{per_lane} lane jobs, {kills} SIGKILLs: {counts}")
    finally:
        await workers.stop()


async def test_a_worker_paused_past_its_lease_is_fenced(
    kind: str, place: str, tmp_path: Path
) -> None:
    lanes, per_lane = 100, 10
    workers = LaneWorkers(kind, place, tmp_path)
    try:
        async with opened(workers.broker()) as broker:
            # The victim's jobs take long enough that it is surely in one when it is paused.
            victim = await workers.start("--run-min", "0.3", "--run-max", "0.4")
            for _ in range(2):
                await workers.start()
            # A pause that led to no takeover (the others were too slow, or the victim woke
            # before any successor wrote): pause again, on new lanes.
            put = 0
            while not workers.count("stale"):
                assert put < PAUSES * lanes, f"no pause of {PAUSES} led to a takeover"
                await broker.queue(workers.queue).put(lane_jobs(lanes, per_lane, put))
                put += lanes
                await pause_unlocked(workers, victim)
                await trio.sleep(LEASE * 4)  # its leases lapse; the others take over
                os.kill(victim.pid, signal.SIGCONT)
                await until(lambda: not workers.in_flight(victim), PATIENCE)
            await drained(broker, workers.queue, PATIENCE)
            # The late acks of the stale writes, refused (they may come after the queue drained).
            await until(lambda: not unrefused_stale(workers.records()), PATIENCE)
        lanes = put
        counts = check(workers, lanes, per_lane)
        print(f"\n{kind}: {lanes}x{per_lane} lane jobs, SIGSTOP past the lease: {counts}")
        assert counts["stale"] >= 1  # the paused worker's late write was refused by the store
        records = workers.records()
        assert not unrefused_stale(records)  # and the ack of each such run by the broker
        # An ack is refused only when the lease was taken over: the job was delivered again,
        # with a newer fence. More acks are refused than writes: a holder that wakes before
        # its successor's first fenced write still commits (and the successor finds a dup),
        # and any worker slowed past its lease on a busy machine is taken over too.
        assert not untaken_refused(records)
    finally:
        await workers.stop()


class _Written:
    """Runs and effects written by hand, to show what `check` accepts and refuses."""

    def __init__(self, folder: Path, lines: list[str]) -> None:
        self.store, self.folder = str(folder / "store.db"), folder
        create_store(self.store)
        (folder / "runs-0.txt").write_text("ready\n" + "".join(f"{x}\n" for x in lines))

    def effect(self, lane: str, seq: int, pid: int, t: float) -> None:
        with sqlite3.connect(self.store) as conn:
            conn.execute(
                "INSERT INTO effects (lane, seq, fence, pid, t) VALUES (?, ?, 1, ?, ?)",
                (lane, seq, pid, t),
            )

    def records(self) -> list[list[str]]:
        return records_in(self.folder)


def test_check_orders_runs_by_their_effects_not_their_end_lines(tmp_path: Path) -> None:
    # Run 0 commits at t=2, then its process pauses until t=9 before it writes its end
    # line; run 1 starts at t=5. That is no overlap: its effect came before run 1 began.
    lines = ["start L0 0 1 7 1.0", "start L0 1 1 8 5.0", "end L0 1 1 8 6.0 applied"]
    lines.append("end L0 0 1 7 9.0 applied")
    fine = _Written(tmp_path, lines)
    fine.effect("L0", 0, 7, 2.0)
    fine.effect("L0", 1, 8, 5.5)
    assert check(fine, 1, 2)["runs"] == 2


def test_check_refuses_a_run_that_started_before_the_previous_effect(tmp_path: Path) -> None:
    lines = ["start L0 0 1 7 1.0", "start L0 1 1 8 1.5", "end L0 0 1 7 2.5 applied"]
    lines.append("end L0 1 1 8 3.5 applied")
    overlapping = _Written(tmp_path, lines)
    overlapping.effect("L0", 0, 7, 2.0)
    overlapping.effect("L0", 1, 8, 3.0)
    with pytest.raises(AssertionError, match="runs overlap"):
        check(overlapping, 1, 2)
