"""Every table of the service, imported in one place so that Alembic sees the whole schema."""

from exchange.base import Base
from exchange.ledger import models as ledger_models
from exchange.rates import models as rate_models
from partners import models as partner_models
from settlement import models as settlement_models

metadata = Base.metadata

__all__ = ["ledger_models", "metadata", "partner_models", "rate_models", "settlement_models"]
