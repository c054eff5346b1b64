"""Signed checkpoints in the database and outside it, and verification of the chain against them.

``CheckpointFiles`` keeps one signed-note file per checkpoint in a directory outside the
database (written to a temporary file, fsync'd, renamed). ``Checkpointer`` signs the head every
``every_records`` records or ``interval_s`` seconds. ``verify_chain`` recomputes a range of the
chain and checks every checkpoint that falls in it, in the database and on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from svc_audit import checkpoint
from svc_audit.chain import ZERO_HASH, ChainVerifier, Fault, FaultReason
from svc_audit.checkpoint import Checkpoint, Signer
from svc_audit.store import AuditStore, StoredCheckpoint

log = logging.getLogger("svc_audit.anchoring")


def to_stored(cp: Checkpoint, kind: str) -> StoredCheckpoint:
    return StoredCheckpoint(
        cp.tree_size,
        cp.origin,
        cp.head_hash,
        cp.sign_time,
        cp.key_id,
        cp.signature,
        cp.note,
        kind,
    )


def from_stored(cp: StoredCheckpoint) -> Checkpoint:
    return Checkpoint(
        cp.origin, cp.tree_size, cp.head_hash, cp.sign_time, cp.key_id, cp.signature, cp.note
    )


class CheckpointFiles:
    """Checkpoint copies as files ``<tree_size>.note`` in ``folder``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def path(self, tree_size: int) -> Path:
        return self.folder / f"{tree_size:020d}.note"

    def write(self, cp: Checkpoint, key: Ed25519PublicKey) -> None:
        """Durably write the copy of ``cp`` (fsync of file and folder before returning)."""
        final = self.path(cp.tree_size)
        tmp = final.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, checkpoint.to_signed_note(cp, key))
            os.fsync(fd)
        finally:
            os.close(fd)
        tmp.replace(final)
        folder = os.open(self.folder, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def read(self, tree_size: int) -> Checkpoint | None:
        """The copy at ``tree_size``; None if missing or unreadable."""
        try:
            return checkpoint.from_signed_note(self.path(tree_size).read_bytes())
        except (OSError, checkpoint.MalformedNote):
            return None

    def sizes(self, first: int, last: int) -> list[int]:
        found = []
        for item in self.folder.glob("*.note"):
            with contextlib.suppress(ValueError):
                size = int(item.stem)
                if first <= size <= last:
                    found.append(size)
        return sorted(found)


@dataclass
class Checkpointer:
    """Signs the head of the log and stores the checkpoint in the database and on disk."""

    store: AuditStore
    signer: Signer
    files: CheckpointFiles
    clock: Callable[[], datetime]
    every_records: int
    interval_s: float

    def __post_init__(self) -> None:
        self._due = asyncio.Event()
        self._signed_size = -1

    def appended(self, head_sequence: int) -> None:
        """Tell the checkpointer the head moved; it signs once ``every_records`` accumulate."""
        if head_sequence - max(self._signed_size, 0) >= self.every_records:
            self._due.set()

    async def sign_at(self, tree_size: int, head_hash: bytes, kind: str) -> Checkpoint:
        """Sign (or return the stored) checkpoint at ``tree_size``: database, then file.

        If another instance on the same database signed that size first, its checkpoint is kept.
        """
        stored = await self.store.checkpoint(tree_size)
        if stored is None or stored.tree_size != tree_size:
            cp = self.signer.sign(tree_size, head_hash, self.clock())
            if not await self.store.add_checkpoint(to_stored(cp, kind)):
                stored = await self.store.checkpoint(tree_size)
        if stored is not None and stored.tree_size == tree_size:
            cp = from_stored(stored)
        await self._ensure_file(cp)
        return cp

    async def _ensure_file(self, cp: Checkpoint) -> None:
        """Write the copy of one of our checkpoints if missing (also after a crash in between)."""
        if cp.key_id == self.signer.key_id and self.files.read(cp.tree_size) is None:
            await asyncio.to_thread(self.files.write, cp, self.signer.private_key.public_key())

    async def sign_head(self) -> Checkpoint | None:
        """Sign the current head if records were appended since the last checkpoint."""
        head = await self.store.head()
        latest = await self.store.checkpoint(0)
        latest_size = latest.tree_size if latest else 0
        self._signed_size = max(latest_size, self._signed_size)
        if head.sequence <= latest_size:
            if latest is not None:
                await self._ensure_file(from_stored(latest))
            return None
        cp = await self.sign_at(head.sequence, head.head_hash, "periodic")
        self._signed_size = cp.tree_size
        log.info("checkpoint signed", extra={"tree_size": cp.tree_size, "key_id": cp.key_id})
        return cp

    async def run(self) -> None:
        """Sign on schedule until cancelled; database outages are logged and retried."""
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._due.wait(), self.interval_s)
            self._due.clear()
            try:
                await self.sign_head()
            except (OSError, ConnectionError, TimeoutError) as exc:
                log.warning("checkpoint deferred", extra={"error": type(exc).__name__})
            except Exception as exc:  # asyncpg errors: keep the schedule alive
                log.warning("checkpoint deferred", extra={"error": type(exc).__name__})


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    start_sequence: int
    end_sequence: int
    records_checked: int
    checkpoints_checked: int
    anchored_sequence: int
    fault: Fault | None


def _check_copies(
    db: Checkpoint | None, disk: Checkpoint | None, trusted: Mapping[str, Ed25519PublicKey]
) -> tuple[FaultReason, str] | None:
    for where, cp in (("stored", db), ("file", disk)):
        if cp is None:
            return FaultReason.CHECKPOINT_MISMATCH, f"the {where} copy is missing"
        reason = checkpoint.check(cp, trusted)
        if reason is not None:
            return reason, f"the {where} copy fails: {reason.name.lower()}"
    assert db is not None and disk is not None
    if (db.note, db.signature, db.key_id) != (disk.note, disk.signature, disk.key_id):
        return FaultReason.CHECKPOINT_MISMATCH, "the file copy differs from the stored copy"
    return None


async def verify_chain(
    store: AuditStore,
    files: CheckpointFiles,
    trusted: Mapping[str, Ed25519PublicKey],
    start: int,
    end: int,
    first_retained: int,
) -> Verification:
    """Recompute records ``start``..``end`` and check the checkpoints among them."""
    if start == 1:
        previous = ZERO_HASH
    elif start > first_retained:
        before = await store.record_hash_at(start - 1)
        if before is None:
            missing = Fault(start - 1, FaultReason.GAP, f"sequence {start - 1} is missing")
            return Verification(False, start, end, 0, 0, 0, missing)
        previous = before
    else:  # the oldest retained record: its link is anchored by the retention checkpoint
        previous = b""
    stored = {c.tree_size: from_stored(c) for c in await store.checkpoints(start - 1, end)}
    sizes = sorted(set(stored) | set(files.sizes(start - 1, end)))
    verifier = ChainVerifier(start, previous)
    checked = anchored = 0
    fault: Fault | None = None
    pending = iter(sizes)
    next_size = next(pending, None)

    def check_at(size: int, head_hash: bytes) -> Fault | None:
        nonlocal checked, anchored
        checked += 1
        db, disk = stored.get(size), files.read(size)
        problem = _check_copies(db, disk, trusted)
        if problem is None and db is not None and db.head_hash != head_hash:
            problem = (FaultReason.CHECKPOINT_MISMATCH, "head hash differs from the records")
        if problem is not None:
            return Fault(size, problem[0], f"checkpoint at {size}: {problem[1]}")
        anchored = max(anchored, size)
        return None

    if previous:
        verifier.hashes_at[start - 1] = previous
    watch = set(sizes)
    async with contextlib.aclosing(store.row_batches(start, end)) as batches:
        async for batch in batches:
            if not previous and verifier.records_checked == 0 and batch[0][0] == start:
                # The oldest retained record: its link is anchored by the checkpoint at start - 1.
                verifier.previous_hash = verifier.hashes_at[start - 1] = batch[0][1]
            fault = verifier.feed_rows(batch, watch)
            # Checkpoints up to the last good record; one of them may fail before ``fault``.
            while next_size is not None and next_size < verifier.expected:
                head_hash = verifier.hashes_at.get(next_size)
                if head_hash is not None:
                    early = check_at(next_size, head_hash)
                    if early is not None:
                        fault = early  # records after the checkpoint do not count as checked
                        verifier.records_checked = min(
                            verifier.records_checked, max(0, next_size - start + 1)
                        )
                        break
                next_size = next(pending, None)
            if fault is not None:
                break
    if fault is None and verifier.expected <= end:
        fault = Fault(
            verifier.expected, FaultReason.GAP, f"sequence {verifier.expected} is missing"
        )
    return Verification(
        fault is None,
        start,
        end,
        verifier.records_checked,
        checked,
        anchored if fault is None else min(anchored, fault.sequence),
        fault,
    )
