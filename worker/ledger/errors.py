"""The ledger's exception root."""


class LedgerError(Exception):
    """Root of every error the ledger raises."""


class AuditChainBroken(LedgerError):
    """The audit log's hash chain does not verify."""


class NotFound(LedgerError):
    """A row that must exist does not."""


class SubjectErasurePending(LedgerError):
    """The subject's erasure was requested and has not completed; nothing was recorded."""

    code = "subject_erased"

    def __init__(self) -> None:
        super().__init__(
            "this subject's erasure is still pending (a legal hold may be keeping it); "
            "submit again once the erasure completes"
        )
