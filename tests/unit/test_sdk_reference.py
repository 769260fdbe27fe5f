"""docs/sdk.md is the SDK's reference, generated from the methods' docstrings: every public
method of the clients has one, and the page is current (regenerate with
``.venv/bin/python -m tests.unit.test_sdk_reference > docs/sdk.md``)."""

from __future__ import annotations

import inspect
from pathlib import Path

from partners.client import ExchangeClient, Operation, _Operations
from partners.operator import OperatorClient, _OperatorOperations

PAGE = Path(__file__).resolve().parents[2] / "docs" / "sdk.md"

HEADER = """# The Python SDK, method by method

Generated from the docstrings of `partners/client.py` and `partners/operator.py` (regenerate:
`.venv/bin/python -m tests.unit.test_sdk_reference > docs/sdk.md`; a test keeps it current).

```python
from partners.client import ExchangeClient, AsyncExchangeClient
from partners.operator import OperatorClient

sky = ExchangeClient(URL, key_id=KEY_ID, alg="ed25519", key=open("sky.pem").read())
```

`key` is an `Ed25519PrivateKey` or its PEM (`str` or `bytes`) for `alg="ed25519"`, or the secret
the exchange printed (base64) for `alg="hmac-sha256"`; anything else raises `KeyMaterialError`.
Every method exists on the async clients too, as a coroutine. Answers are the Structs of
`exchange/contract` (fields as in the OpenAPI document at `/docs/openapi.json`); a refusal
raises `ProblemError` (`.status`, `.type`, `.problem`); an answer without a valid exchange
signature raises `ResponseSignatureInvalid`. Every POST takes `idempotency_key=` (default: a
fresh one, reused by every retry). `partners.verify` checks documents, statement hashes and CSV
statements.
"""


EXAMPLES = {
    "request": 'sky.request("GET", "/v1/charities").json()',
    "me": 'sky.me().currency == "SKY"',
    "enrol": 'sky.enrol("alice").member_ref',
    "member": 'sky.member("alice").available',
    "history": 'older = sky.history("alice", cursor=sky.history("alice", limit=50).next_cursor)',
    "issue": 'sky.issue("alice", 10_000, "flight LH123").balances[0].available',
    "redeem": 'sky.redeem("alice", 2_000).transaction.id',
    "transfer": 'sky.transfer("alice", "bob", 500)',
    "hold": 'held = sky.hold("alice", 1_000, expires_in=3_600)\nheld.hold.id',
    "capture": "sky.capture(held.hold.id, 600)  # more than held: 422 hold-exceeded",
    "void": 'sky.void(held.hold.id).hold.status == "voided"',
    "reverse": "sky.reverse(converted.transaction.id, 1_000)  # only the brand that made it",
    "transaction": "sky.transaction(tx_id).receipt  # the exchange's signature over it",
    "rates": "[(r.from_currency, r.to_currency, r.fee_bps) for r in sky.rates().rates]",
    "charities": "{c.code: c.id for c in sky.charities()}",
    "quote": (
        'q = sky.quote("alice", "HTL", "alice-h", 5_000)\nsky.convert(*[None] * 4, quote_id=q.id)'
    ),
    "convert": 'sky.convert("alice", "HTL", "alice-h", 5_000).conversion.out',
    "donate": 'sky.donate("alice", "AID", 1_000).donation_receipt',
    "batch": 'sky.batch([BatchIssue("k1", "alice", 10), BatchTransfer("k2", "alice", "bob", 5)])',
    "settlements": '[s["business_date"] for s in sky.settlements()]',
    "settlement": 'signed = sky.settlement("2026-11-21")\nsigned["statement"], signed["signature"]',
}
"""An example per call whose docstring has none."""


def _section(title: str, operations: type) -> list[str]:
    lines = [f"## {title}", ""]
    for name, value in vars(operations).items():
        if not isinstance(value, Operation):
            continue
        signature = str(inspect.signature(value.plan)).replace("'", "")
        arguments, _, returns = signature.rpartition(" -> ")
        returns = returns.removeprefix("Call[").removesuffix("]")
        lines += [f"### `{name}`", "", f"`{name}{arguments}` -> `{returns}`", ""]
        lines += [inspect.cleandoc(value.plan.__doc__ or ""), ""]
        if name in EXAMPLES:
            lines += ["```python", EXAMPLES[name], "```", ""]
    return lines


def reference() -> str:
    lines = [HEADER]
    lines += _section(f"Partner calls (`{ExchangeClient.__name__}`)", _Operations)
    lines += _section(f"Operator calls (`{OperatorClient.__name__}`)", _OperatorOperations)
    return "\n".join(lines).rstrip() + "\n"


def test_every_public_method_has_a_docstring() -> None:
    for operations in (_Operations, _OperatorOperations):
        for name, value in vars(operations).items():
            if isinstance(value, Operation):
                assert (value.plan.__doc__ or "").strip(), name


def test_every_call_has_an_example() -> None:
    for operations in (_Operations, _OperatorOperations):
        for name, value in vars(operations).items():
            if isinstance(value, Operation):
                assert name in EXAMPLES or "``" in (value.plan.__doc__ or "").split("\n\n")[-1], (
                    name
                )


def test_the_reference_page_is_current() -> None:
    assert PAGE.read_text() == reference()


if __name__ == "__main__":
    print(reference(), end="")
