"""The domain's value types, defined once: the bounds the services check and the annotated
types the request and answer Structs carry (so OpenAPI and the SDK show the same bounds)."""

from __future__ import annotations

from typing import Annotated

import msgspec

MAX_POINTS = 10**12
"""A request amount is 1 to 10^12 points."""
MAX_MEMBER_REF = 128
MAX_MICROS_PER_POINT = 1_000_000
"""A point is worth at most one unit of the settlement currency. The cap keeps every money leg in
range: 10^12 points at 10^6 micros is 10^18 micros, under a BIGINT's 9.2 x 10^18."""

Points = Annotated[
    int,
    msgspec.Meta(ge=1, le=MAX_POINTS, description="Whole points, 1 to 10^12, as a JSON integer."),
]
PointsFloor = Annotated[
    int,
    msgspec.Meta(ge=0, le=MAX_POINTS, description="Whole points, 0 to 10^12: a lower limit."),
]
"""A bound on amounts (a rate's ``min_points``) that may be zero."""
MemberRef = Annotated[
    str,
    msgspec.Meta(
        min_length=1,
        max_length=MAX_MEMBER_REF,
        description="The brand's own identifier of the member: printable, no outer spaces.",
    ),
]
Reference = Annotated[
    str,
    msgspec.Meta(
        max_length=200,
        pattern=r"^[^\x00-\x1f\x7f]*$",
        description="The caller's own reference (an order number, ...), kept on the transaction.",
    ),
]
