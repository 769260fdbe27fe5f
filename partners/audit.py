"""A partner's audit of the exchange's log: checkpoints, receipts, members' chains.

:class:`LogAuditor` keeps the last checkpoint it accepted (in a small JSON file, if given one)
and, for each new one, checks the exchange's signature and that it extends the last (RFC 9162
consistency proof): two checkpoints of one size with different roots, or a pair that is not
consistent, raise :class:`~partners.transparency.ForkDetected`. A receipt is proved in the log by
an inclusion proof against the last checkpoint; a member's history is recomputed as a chain.

From the command line, over a finance team's saved receipts (JSON answers of the API)::

    python -m partners.audit --url https://exchange.example --key-id KEY --key key.pem \\
        --origin exchange.example/transactions --state audit-state.json receipts/*.json
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from exchange.contract.schemas import HistoryPage, PublicKey
from exchange.contract.transparency import (
    CheckpointOut,
    ConsistencyProofOut,
    InclusionProofOut,
    WitnessCreate,
)
from partners.client import ExchangeClient, ProblemError
from partners.transparency import (
    ChainLink,
    Checkpoint,
    ForkDetected,
    ProofError,
    leaf_hash,
    note_signature_line,
    open_checkpoint,
    posting_hash,
    transaction_leaf,
    verify_chain,
    verify_consistency,
    verify_inclusion,
)


def _decode(kind: type[Any], client: ExchangeClient, method: str, path: str, **kw: Any) -> Any:
    response = client.request(method, path, **kw)
    if response.status_code >= 400:
        raise ProblemError(response.status_code, response.json())
    return msgspec.json.decode(response.content, type=kind)


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class LogAuditor:
    """What one partner has seen of the log, and the checks it makes of what it sees next."""

    def __init__(self, client: ExchangeClient, origin: str, state: Path | None = None) -> None:
        self.client = client
        self.origin = origin
        self.state = state
        self.last: Checkpoint | None = None
        self._keys: dict[str, Ed25519PublicKey] | None = None
        self.kept: list[dict[str, Any]] = []
        """Receipts kept (:meth:`keep`) and not yet proved in a checkpoint."""
        if state is not None and state.exists():
            note = json.loads(state.read_text())["checkpoint"]
            self.last = open_checkpoint(note, origin, self.keys())

    def keys(self) -> dict[str, Ed25519PublicKey]:
        """The exchange's published keys (``GET /v1/keys``)."""
        if self._keys is None:
            keys = {}
            for entry in _decode(list[PublicKey], self.client, "GET", "/v1/keys"):
                public = serialization.load_pem_public_key(entry.public_key.encode())
                if isinstance(public, Ed25519PublicKey):
                    keys[entry.key_id] = public
            self._keys = keys
        return self._keys

    def accept(self, note: str) -> Checkpoint:
        """Check a checkpoint against the last one accepted, and keep it if it is newer."""
        checkpoint = open_checkpoint(note, self.origin, self.keys())
        last = self.last
        if last is not None and last.size == checkpoint.size:
            if last.root != checkpoint.root:
                raise ForkDetected(f"two checkpoints of size {last.size} with different roots")
        elif last is not None:
            old, new = sorted((last, checkpoint), key=lambda c: c.size)
            proof = _decode(
                ConsistencyProofOut, self.client, "GET", "/v1/proofs/consistency",
                params={"from": old.size, "to": new.size},
            )  # fmt: skip
            hashes = [bytes.fromhex(h) for h in proof.proof]
            verify_consistency(old.size, new.size, old.root, new.root, hashes)
        if last is None or checkpoint.size > last.size:
            self.last = checkpoint
            if self.state is not None:
                self.state.write_text(json.dumps({"checkpoint": checkpoint.text}))
        return checkpoint

    def check_latest(self) -> Checkpoint:
        """Fetch the latest checkpoint and accept it."""
        return self.accept(
            _decode(CheckpointOut, self.client, "GET", "/v1/checkpoints/latest").note
        )

    def keep(self, answer: dict[str, Any]) -> None:
        """Keep a receipt (a transaction answer, as JSON) to prove once a checkpoint holds it."""
        self.kept.append(answer)

    def verify_kept(self) -> dict[str, int]:
        """Check the latest checkpoint, then prove every kept receipt its tree holds; those it
        does not hold yet stay kept for the next call (``verify_receipt`` raises for them).
        Returns the proved transactions' log indexes by id."""
        checkpoint = self.check_latest()
        proved: dict[str, int] = {}
        waiting = []
        for answer in self.kept:
            transaction_id = answer["transaction"]["id"]
            try:
                proved[transaction_id] = self.verify_receipt(answer)
            except ProofError:
                if self._logged_within(transaction_id, checkpoint.size):
                    raise
                waiting.append(answer)
        self.kept = waiting
        return proved

    def _logged_within(self, transaction_id: str, size: int) -> bool:
        """Whether the exchange places the transaction inside the tree of ``size``."""
        response = self.client.request(
            "GET", "/v1/proofs/inclusion", params={"transaction": transaction_id}
        )
        if response.status_code != 200:
            return False
        return bool(response.json()["leaf_index"] < size)

    def verify_receipt(self, answer: dict[str, Any]) -> int:
        """Check a saved answer's receipt (the exchange's signature over its ``transaction``) and
        that the transaction, with the postings it shows, is in the log; its index."""
        transaction, receipt = answer["transaction"], answer["receipt"]
        public = self.keys().get(receipt["key_id"])
        if public is None:
            raise ProofError(f"receipt signed by unknown key {receipt['key_id']}")
        try:
            public.verify(base64.b64decode(receipt["signature"]), canonical_json(transaction))
        except InvalidSignature as exc:
            raise ProofError("the receipt's signature does not verify") from exc
        checkpoint = self.last or self.check_latest()
        proof = self._inclusion(transaction["id"], checkpoint.size)
        hashes = [bytes.fromhex(h) for h in proof.posting_hashes]
        for posting in transaction["postings"]:
            _check_posting(transaction["id"], posting)
            if bytes.fromhex(posting["hash"]) not in hashes:
                raise ProofError(f"posting {posting['hash']} is not in the logged transaction")
        if proof.kind != transaction["kind"]:
            raise ProofError("the logged transaction is of another kind")
        leaf = leaf_hash(transaction_leaf(uuid.UUID(transaction["id"]), proof.kind, hashes))
        path = [bytes.fromhex(h) for h in proof.proof]
        verify_inclusion(proof.leaf_index, checkpoint.size, leaf, path, checkpoint.root)
        return proof.leaf_index

    def _inclusion(self, transaction_id: str, size: int) -> InclusionProofOut:
        try:
            proof: InclusionProofOut = _decode(
                InclusionProofOut, self.client, "GET", "/v1/proofs/inclusion",
                params={"transaction": transaction_id, "size": size},
            )  # fmt: skip
        except ProblemError as exc:
            raise ProofError(f"transaction {transaction_id} is not in the log: {exc}") from exc
        return proof

    def verify_history(self, member_ref: str) -> bytes:
        """Recompute the member's whole chain from its history; the head hash."""
        items = []
        cursor = None
        while True:
            page: HistoryPage = self.client.history(member_ref, limit=500, cursor=cursor)
            items.extend(page.items)
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        return verify_chain(
            [
                ChainLink(
                    item.account_id,
                    item.seq,
                    item.transaction_id,
                    item.amount,
                    item.balance_after,
                    bytes.fromhex(item.prev_hash),
                    bytes.fromhex(item.hash),
                    item.counterparty_account_id,
                )
                for item in reversed(items)
            ]
        )

    def witness(self, checkpoint: Checkpoint, key_id: str, key: Ed25519PrivateKey) -> CheckpointOut:
        """Co-sign a checkpoint this auditor accepted, with one of the partner's Ed25519 keys."""
        line = note_signature_line(key_id, key, checkpoint.body)
        response = self.client.request(
            "POST", "/v1/checkpoints/witness",
            json=msgspec.to_builtins(WitnessCreate(checkpoint.size, line)),
        )  # fmt: skip
        if response.status_code >= 400:
            raise ProblemError(response.status_code, response.json())
        return msgspec.json.decode(response.content, type=CheckpointOut)


def _check_posting(transaction_id: str, posting: dict[str, Any]) -> None:
    """A posting's hash is what its fields give (answers that carry them all)."""
    if "prev_hash" not in posting:
        return
    computed = posting_hash(
        posting["account_id"], posting["seq"], uuid.UUID(transaction_id), posting["amount"],
        posting["balance_after"], bytes.fromhex(posting["prev_hash"]),
        posting["counterparty_account_id"],
    )  # fmt: skip
    if computed.hex() != posting["hash"]:
        raise ProofError(
            f"posting {posting['seq']} of {transaction_id}: its hash is not its fields'"
        )


def audit_files(auditor: LogAuditor, paths: Iterable[Path]) -> list[str]:
    """Check the latest checkpoint, then every saved receipt; one line per file."""
    checkpoint = auditor.check_latest()
    lines = [f"checkpoint {checkpoint.size} {checkpoint.root.hex()} consistent"]
    for path in paths:
        answer = json.loads(path.read_text())
        if "transaction" in answer and "receipt" in answer:
            index = auditor.verify_receipt(answer)
            lines.append(f"{path}: transaction {answer['transaction']['id']} at {index}")
        else:
            lines.append(f"{path}: not a receipt, skipped")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partners.audit", description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--key-id", required=True)
    parser.add_argument("--key", required=True, type=Path, help="the partner's Ed25519 PEM")
    parser.add_argument("--origin", required=True)
    parser.add_argument("--state", type=Path, help="where the last checkpoint is kept")
    parser.add_argument("files", nargs="*", type=Path)
    args = parser.parse_args(argv)
    key = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        parser.error("--key must be an Ed25519 private key")
    with ExchangeClient(args.url, key_id=args.key_id, alg="ed25519", key=key) as client:
        try:
            auditor = LogAuditor(client, args.origin, args.state)
            for line in audit_files(auditor, args.files):
                print(line)
        except ProofError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
