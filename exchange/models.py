"""Every table of the service, imported in one place so that Alembic sees the whole schema."""

from exchange import outbox as outbox_models
from exchange.base import Base
from exchange.console import models as console_models
from exchange.ledger import lot_models
from exchange.ledger import models as ledger_models
from exchange.pricing import models as rate_models
from exchange.purchases import models as purchase_models
from exchange.reporting import models as reporting_models
from exchange.transparency import models as log_models
from partners import models as partner_models
from settlement import models as settlement_models

metadata = Base.metadata

__all__ = [
    "console_models",
    "ledger_models",
    "log_models",
    "lot_models",
    "metadata",
    "outbox_models",
    "partner_models",
    "purchase_models",
    "rate_models",
    "reporting_models",
    "settlement_models",
]
