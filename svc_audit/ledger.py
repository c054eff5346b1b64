"""The log's rules on top of the store: idempotent appends, sealing and opening personal values.

``Ledger`` is what the servicer calls. It decides (duplicates, conflicts, tombstones) and
delegates I/O to ``store``/``store_keys`` and the key provider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from svc_audit import chain, crypto, store_keys
from svc_audit.chain import Entry, SealedField
from svc_audit.crypto import KeyProvider
from svc_audit.store import Ack, AuditStore, EventRaced

KEY_CACHE_S = 30.0  # unwrapped subject keys stay in memory at most this long


@dataclass(frozen=True, slots=True)
class PersonalValue:
    subject_id: str
    name: str
    value: str


@dataclass(frozen=True, slots=True)
class EventIn:
    """An event as a producer sent it, personal values in plaintext."""

    event_id: str
    occurred_s: int
    occurred_nanos: int
    actor: str
    action: str
    resource: str
    building_id: str
    outcome: int
    attributes: tuple[tuple[str, str], ...]
    personal: tuple[PersonalValue, ...] = ()

    @property
    def occurred_us(self) -> int:
        return self.occurred_s * 1_000_000 + self.occurred_nanos // 1000


@dataclass(frozen=True, slots=True)
class OpenedField:
    """A stored personal value: its plaintext, or ``erase_time`` set for a tombstone."""

    subject_id: str
    name: str
    value: str
    erase_time: datetime | None


@dataclass(frozen=True, slots=True)
class OpenedRecord:
    sequence: int
    entry: Entry
    personal: tuple[OpenedField, ...]
    record_hash: bytes
    previous_hash: bytes
    append_time_us: int


class ContentConflict(Exception):
    """Event ids already logged with different content."""

    def __init__(self, event_ids: Sequence[str]) -> None:
        super().__init__(", ".join(event_ids))
        self.event_ids = list(event_ids)


def _aad(event: EventIn | Entry, subject_id: str, name: str) -> bytes:
    occurred_us = event.occurred_s * 1_000_000 + event.occurred_nanos // 1000
    return crypto.envelope_aad(
        event.event_id,
        occurred_us,
        event.actor,
        event.action,
        event.resource,
        event.building_id,
        subject_id,
        name,
    )


@dataclass
class Keyring:
    """Subject keys: found, created on first use, cached briefly, forgotten on erasure."""

    store: AuditStore
    provider: KeyProvider
    _cache: dict[str, tuple[float, bytes]] = field(default_factory=dict)

    async def keys(
        self, subject_ids: Sequence[str], create: bool
    ) -> tuple[dict[str, bytes], dict[str, datetime]]:
        """``(keys, erased)``: the key of each subject that has one (made when ``create``),
        and the erase time of each erased subject."""
        now = time.monotonic()
        for stale in [s for s, (t, _) in self._cache.items() if now - t >= KEY_CACHE_S]:
            del self._cache[stale]
        found = {
            s: k for s, (t, k) in self._cache.items() if s in subject_ids and now - t < KEY_CACHE_S
        }
        missing = [s for s in dict.fromkeys(subject_ids) if s not in found]
        if not missing:
            return found, {}
        wrapped = await store_keys.wrapped_keys(self.store, missing)
        gone = await store_keys.erased(self.store, missing)
        for subject in missing:
            if subject in gone:
                continue
            blob = wrapped.get(subject)
            if blob is None and create:
                fresh = await asyncio.to_thread(self.provider.wrap, crypto.new_subject_key())
                blob = await store_keys.add_wrapped_key(
                    self.store, subject, fresh, self.provider.key_id
                )
                if blob is None:  # erased meanwhile
                    gone.update(await store_keys.erased(self.store, [subject]))
                    continue
            if blob is not None:
                key = await asyncio.to_thread(self.provider.unwrap, blob)
                found[subject] = key
                self._cache[subject] = (now, key)
        return found, gone

    def forget(self, subject_id: str) -> None:
        self._cache.pop(subject_id, None)


class GroupCommit:
    """Appends requests that arrive together in one transaction (one commit, one fsync).

    Appends are serialised by the sequencer anyway; while one transaction commits, the
    requests that arrive queue up and the next transaction takes them all. Each caller still
    gets exactly its own acknowledgements, or the error of the transaction it was part of
    (then nothing of it was written, and its retry logic applies).
    """

    MAX_RECORDS = 2000

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._queue: list[tuple[Sequence[Entry], asyncio.Future[list[Ack]]]] = []
        self._draining = False

    async def append(self, entries: Sequence[Entry]) -> list[Ack]:
        future: asyncio.Future[list[Ack]] = asyncio.get_running_loop().create_future()
        self._queue.append((entries, future))
        if not self._draining:
            self._draining = True
            asyncio.get_running_loop().create_task(self._drain())
        return await future

    def _take(self) -> list[tuple[Sequence[Entry], asyncio.Future[list[Ack]]]]:
        Pending = tuple[Sequence[Entry], asyncio.Future[list[Ack]]]
        taken: list[Pending] = []
        left: list[Pending] = []
        ids: set[str] = set()
        records = 0
        for entries, future in self._queue:
            mine = {e.event_id for e in entries}
            room = records + len(entries) <= self.MAX_RECORDS
            if future.done() or (taken and (mine & ids or not room)):
                # Cancelled callers are dropped; overlapping ids wait for the next round.
                if not future.done():
                    left.append((entries, future))
                continue
            taken.append((entries, future))
            ids |= mine
            records += len(entries)
        self._queue = left
        return taken

    async def _drain(self) -> None:
        try:
            while self._queue:
                taken = self._take()
                if not taken:
                    continue
                try:
                    acks = await self.store.append([e for entries, _ in taken for e in entries])
                except BaseException as exc:
                    for _, future in taken:
                        if not future.done():
                            future.set_exception(exc)
                    if not isinstance(exc, Exception):
                        raise
                    continue
                position = 0
                for entries, future in taken:
                    if not future.done():
                        future.set_result(acks[position : position + len(entries)])
                    position += len(entries)
        finally:
            self._draining = False


class Ledger:
    """Appends and reads records, applying the contract's rules."""

    def __init__(self, store: AuditStore, keyring: Keyring) -> None:
        self.store = store
        self.keyring = keyring
        self._commits = GroupCommit(store)

    async def append(self, events: Sequence[EventIn]) -> list[Ack]:
        """Append ``events`` (all or none) and return one acknowledgement each, in order.

        Raises ContentConflict, writing nothing, if an event id is logged with other content.
        """
        while True:
            existing = await self.store.existing([e.event_id for e in events])
            conflicts = [
                e.event_id
                for e in events
                if e.event_id in existing
                and not await self._same(e, chain.decode(existing[e.event_id][1]).entry)
            ]
            if conflicts:
                raise ContentConflict(conflicts)
            new = [e for e in events if e.event_id not in existing]
            acks: dict[str, Ack] = {k: a for k, (a, _) in existing.items()}
            if new:
                entries = await self._seal(new)
                try:
                    for ack in await self._commits.append(entries):
                        acks[ack.event_id] = ack
                except EventRaced:
                    continue  # a concurrent append logged one of them: compare again
            return [acks[e.event_id] for e in events]

    async def _seal(self, events: Sequence[EventIn]) -> list[Entry]:
        subjects = [p.subject_id for e in events for p in e.personal]
        keys, _ = await self.keyring.keys(subjects, create=True) if subjects else ({}, {})
        entries = []
        for e in events:
            sealed = []
            for p in e.personal:
                key = keys.get(p.subject_id)
                if key is None:  # erased subject: a tombstone from the start
                    sealed.append(SealedField(p.subject_id, p.name, b"", b""))
                else:
                    nonce, ct = crypto.seal(key, p.value, _aad(e, p.subject_id, p.name))
                    sealed.append(SealedField(p.subject_id, p.name, nonce, ct))
            entries.append(
                Entry(
                    e.event_id,
                    e.occurred_s,
                    e.occurred_nanos,
                    e.actor,
                    e.action,
                    e.resource,
                    e.building_id,
                    e.outcome,
                    e.attributes,
                    tuple(sealed),
                )
            )
        return entries

    async def _same(self, event: EventIn, stored: Entry) -> bool:
        """Field-by-field comparison; personal values only while their key exists."""
        plain = (
            event.occurred_s,
            event.occurred_nanos,
            event.actor,
            event.action,
            event.resource,
            event.building_id,
            event.outcome,
            event.attributes,
            [(p.subject_id, p.name) for p in event.personal],
        )
        kept = (
            stored.occurred_s,
            stored.occurred_nanos,
            stored.actor,
            stored.action,
            stored.resource,
            stored.building_id,
            stored.outcome,
            stored.attributes,
            [(f.subject_id, f.name) for f in stored.personal],
        )
        if plain != kept:
            return False
        opened = await self.open_fields(stored)
        return all(
            o.erase_time is not None or o.value == p.value
            for o, p in zip(opened, event.personal, strict=True)
        )

    async def open_fields(self, entry: Entry) -> tuple[OpenedField, ...]:
        """Decrypt the personal values of ``entry``, or mark them erased."""
        if not entry.personal:
            return ()
        keys, gone = await self.keyring.keys(entry.subjects, create=False)
        opened = []
        for f in entry.personal:
            key = keys.get(f.subject_id)
            if key is None or not f.nonce:
                when = gone.get(f.subject_id)
                if when is None:
                    when = (await store_keys.erased(self.store, [f.subject_id])).get(f.subject_id)
                opened.append(OpenedField(f.subject_id, f.name, "", when))
            else:
                aad = _aad(entry, f.subject_id, f.name)
                value = crypto.open_sealed(key, f.nonce, f.ciphertext, aad)
                opened.append(OpenedField(f.subject_id, f.name, value, None))
        return tuple(opened)
