"""A memo, per database engine, of facts that never change once written.

A brand's currency and partner row, the account ids of a participant's settlement shards, the
operator's id, a member's account and the issuance shard it meets: each is fixed when its row
is written and never updated or deleted, so a process may remember what it read. Only what was
found is kept (a member not enrolled yet, or an operator not registered yet, is asked again),
and only once the transaction that read it has committed: a row this transaction wrote itself
and then rolled back is never remembered. Each memo is bounded, oldest forgotten first, and is
the engine's, so that two databases served by one process (tests do this) never share an entry.

Written here rather than taken from a cache library: what makes these entries safe to keep is
the ledger's own rule (rows of these kinds are immutable), not an expiry policy.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

MAX_ENTRIES = 200_000
"""Entries kept per memo; a member's entry is about 200 bytes."""
_PENDING = "memo_pending"

_MEMOS: WeakKeyDictionary[Any, dict[str, Memo]] = WeakKeyDictionary()


class Memo:
    """A bounded map of what was found and committed."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self._entries: OrderedDict[Any, Any] = OrderedDict()
        self._max = max_entries

    def get(self, key: Any) -> Any:
        """The value kept for ``key``, or ``None``."""
        return self._entries.get(key)

    def keep(self, key: Any, value: Any) -> None:
        self._entries[key] = value
        if len(self._entries) > self._max:
            self._entries.popitem(last=False)


def memo(session: AsyncSession, name: str) -> Memo:
    """The memo ``name`` of the engine ``session`` talks to."""
    engine = session.get_bind()
    memos = _MEMOS.get(engine)
    if memos is None:
        memos = _MEMOS[engine] = {}
    found = memos.get(name)
    if found is None:
        found = memos[name] = Memo()
    return found


def remember(session: AsyncSession, name: str, key: Any, value: Any) -> None:
    """Keep ``value`` in the memo ``name`` once ``session``'s transaction commits."""
    pending: list[tuple[Memo, Any, Any]] = session.sync_session.info.setdefault(_PENDING, [])
    pending.append((memo(session, name), key, value))


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    for found, key, value in session.info.pop(_PENDING, ()):
        found.keep(key, value)


@event.listens_for(Session, "after_soft_rollback")
def _rolled_back(session: Session, _transaction: Any) -> None:
    session.info.pop(_PENDING, None)
