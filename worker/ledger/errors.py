"""The ledger's exception root."""


class LedgerError(Exception):
    """Root of every error the ledger raises."""


class AuditChainBroken(LedgerError):
    """The audit log's hash chain does not verify."""


class NotFound(LedgerError):
    """A row that must exist does not."""
