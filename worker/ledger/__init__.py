"""The ledger: SQLAlchemy models, unit of work, Alembic migrations, hash-chained audit log."""

from worker.ledger.db import Database
from worker.ledger.errors import AuditChainBroken, LedgerError, NotFound

__all__ = ["AuditChainBroken", "Database", "LedgerError", "NotFound"]
