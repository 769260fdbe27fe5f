"""Tables of the transaction log: entries, tiles of hashes, signed checkpoints, co-signatures."""

from __future__ import annotations

import datetime as dt
import uuid

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    LargeBinary,
    SmallInteger,
    String,
    Text,
    Uuid,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.base import Base, UTCDateTime, utcnow


class LogEntry(Base):
    """A transaction's place in the log, assigned once by the sequencer."""

    __tablename__ = "log_entry"
    __table_args__ = (CheckConstraint("idx >= 0", name="idx"),)

    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    transaction_id: Mapped[uuid.UUID] = mapped_column(Uuid, unique=True)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary(32))


class LogTile(Base):
    """Up to 256 consecutive hashes at tree height ``8 * level`` (C2SP tlog-tiles): tile
    ``idx`` holds entries ``256 * idx`` onwards. A partial tile is rewritten as it fills."""

    __tablename__ = "log_tile"

    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hashes: Mapped[bytes] = mapped_column(LargeBinary)


class LogCheckpoint(Base):
    """A signed checkpoint: one root per size, for good."""

    __tablename__ = "log_checkpoint"
    __table_args__ = (CheckConstraint("reason IN ('interval', 'cutoff')", name="reason"),)

    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    note: Mapped[str] = mapped_column(Text)
    """The C2SP signed note, as the exchange signed it."""
    reason: Mapped[str] = mapped_column(String(16))
    """``interval`` or ``cutoff`` (a settlement run)."""
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class LogWitness(Base):
    """A partner's co-signature of a checkpoint it verified (a signed-note signature line)."""

    __tablename__ = "log_witness"

    checkpoint_size: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("log_checkpoint.size"), primary_key=True
    )
    partner_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("partner.id"), primary_key=True)
    key_id: Mapped[str] = mapped_column(String(64))
    signature_line: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
