"""Task names and queues: the wire contract of every task, in one place.

Pure constants (nothing imported): the Celery configuration (:mod:`worker.dispatch.config`),
the tasks (``worker/tasks/*``), the dispatchers and the CLI all read them from here. A task's
queue is the one its name's prefix routes to (:func:`queue_of`).
"""

from __future__ import annotations

# ----- queues ------------------------------------------------------------------------------------

MEDIA = "media"
PRIVACY = "privacy"
RESEARCH = "research"
WEBHOOKS = "webhooks"
QUEUES = (MEDIA, PRIVACY, RESEARCH, WEBHOOKS)
DEAD_LETTER_EXCHANGE = "facemedia.dead"

# ----- tasks (JSON args; contracts in docs/ARCHITECTURE.md) -------------------------------------

# media: [job_id]
PROCESS = "facemedia.media.process"

# privacy
SWEEP = "facemedia.privacy.sweep"  # [] or [as_of ISO-8601]
ORPHANS = "facemedia.privacy.orphans"  # []
ERASE = "facemedia.privacy.erase"  # [ledger_subject_id]
WITHDRAW = "facemedia.privacy.withdraw_consent"  # [ledger_subject_id]
RESCUE = "facemedia.privacy.rescue"  # []
KEK_EPOCH = "facemedia.privacy.kek_epoch"  # []

# research
BUILD_SHARD = "facemedia.research.build_shard"  # [release_id, shard_index]
FINISH = "facemedia.research.finish_release"  # [release_id]
PURGE_PENDING = "facemedia.research.purge_revoked"  # []
BUILD_KSAME = "facemedia.research.build_ksame_batches"  # []

# webhooks: [job_id] (posts an ended job's summary to its callback_url; retries itself)
DELIVER_WEBHOOK = "facemedia.webhooks.deliver"
RESCUE_WEBHOOKS = "facemedia.webhooks.rescue"  # [] (beat: pending deliveries never attempted)

# Bounded work per task (a task that has more re-sends itself, or waits for beat).
SWEEP_BATCHES_PER_TASK = 20
KSAME_BATCHES_PER_TASK = 20

# Routing by name prefix (Celery's ``task_routes``; :func:`queue_of` for direct sends).
ROUTES = {
    "facemedia.media.*": MEDIA,
    "facemedia.privacy.*": PRIVACY,
    "facemedia.research.*": RESEARCH,
    "facemedia.webhooks.*": WEBHOOKS,
}

# The modules that register the Celery tasks (Celery's ``imports``).
TASK_MODULES = (
    "worker.tasks.media",
    "worker.tasks.privacy",
    "worker.tasks.releases",
    "worker.tasks.sampling",
    "worker.tasks.webhooks",
)


def queue_of(task: str) -> str:
    """The queue a task name routes to; ValueError for a name outside ``facemedia.*``."""
    for pattern, queue in ROUTES.items():
        if task.startswith(pattern[:-1]):
            return queue
    raise ValueError(f"no queue routes task {task!r}")
