"""The result cache in Redis: final answers to identical problems, honouring `CachePolicy`.

One Redis hash per (problem digest, backend preference) holds the final `SolveResponse` and the
settings it was solved under. A later request is answered from it when that answer is at least
as good as a fresh solve would be: the same preference, a budget at least as long, a gap target
at least as tight. OPTIMAL and INFEASIBLE answers match any settings and are also stored under
the digest alone. The cache is advisory: when Redis fails, the service solves as if it missed.
"""

from __future__ import annotations

import logging

import redis.asyncio
from hvac.optimizer.v1 import optimizer_service_pb2 as pb

log = logging.getLogger("svc_optimizer.cache")

DEFINITIVE = (pb.SOLVE_STATUS_OPTIMAL, pb.SOLVE_STATUS_INFEASIBLE)
STORED = (*DEFINITIVE, pb.SOLVE_STATUS_FEASIBLE)
NO_TARGET = ""


def _bytes(entry: dict[bytes | str, bytes | str]) -> dict[bytes, bytes]:
    return {_b(k): _b(v) for k, v in entry.items()}


def _b(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()


class ResultCache:
    """Reads and writes final results; every method swallows Redis errors (and logs them)."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str, ttl_s: int) -> None:
        self._client = client
        self._prefix = prefix
        self._ttl_s = ttl_s

    @classmethod
    def from_url(cls, url: str, prefix: str, ttl_s: int) -> ResultCache:
        client = redis.asyncio.Redis.from_url(url, socket_timeout=0.2, socket_connect_timeout=0.2)
        return cls(client, prefix, ttl_s)

    async def close(self) -> None:
        await self._client.aclose()

    def _key(self, digest: str, preference: int | None) -> str:
        suffix = "any" if preference is None else f"backend-{preference}"
        return f"{self._prefix}solve:{digest}:{suffix}"

    async def lookup(
        self, digest: str, preference: int, budget_s: float, gap_target: float | None
    ) -> pb.SolveResponse | None:
        """A stored final response that a fresh solve under these settings could not beat."""
        try:
            definitive = _bytes(await self._client.hgetall(self._key(digest, None)))
            if definitive:
                return pb.SolveResponse.FromString(definitive[b"response"])
            entry = _bytes(await self._client.hgetall(self._key(digest, preference)))
        except redis.RedisError as exc:
            log.warning("cache lookup failed", extra={"error": str(exc)})
            return None
        if not entry:
            return None
        stored_budget = float(entry[b"budget_s"])
        stored_gap = entry[b"gap_target"].decode()
        if stored_budget < budget_s:
            return None
        if stored_gap != NO_TARGET and (gap_target is None or float(stored_gap) > gap_target):
            return None
        return pb.SolveResponse.FromString(entry[b"response"])

    async def store(
        self,
        digest: str,
        preference: int,
        budget_s: float,
        gap_target: float | None,
        response: pb.SolveResponse,
    ) -> None:
        """Keep a final response for later identical requests (NO_SOLUTION is never kept)."""
        if response.status not in STORED:
            return
        definitive = response.status in DEFINITIVE
        key = self._key(digest, None if definitive else preference)
        fields: list[bytes | str] = [
            "response",
            response.SerializeToString(deterministic=True),
            "budget_s",
            repr(budget_s),
            "gap_target",
            NO_TARGET if gap_target is None else repr(gap_target),
        ]
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.hset(key, items=fields)
                pipe.expire(key, self._ttl_s)
                await pipe.execute()
        except redis.RedisError as exc:
            log.warning("cache store failed", extra={"error": str(exc)})
