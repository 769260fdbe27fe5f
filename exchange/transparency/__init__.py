"""The transparency log of transactions: RFC 9162 hashing, tile storage, the sequencer that
appends committed transactions, signed checkpoints and the proofs a partner checks."""
