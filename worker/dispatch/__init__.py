"""The dispatch port between services and the queue.

- :mod:`~worker.dispatch.names`: task names, queues and routes (the wire contract);
- :mod:`~worker.dispatch.config`: the Celery configuration built from the settings;
- :mod:`~worker.dispatch.base`: the :class:`Dispatcher` services are given;
- :mod:`~worker.dispatch.broker`: ``CeleryDispatcher``, sends to the configured broker;
- :mod:`~worker.dispatch.inline`: ``InlineDispatcher``, the embedded default (runs tasks here);
- :mod:`~worker.dispatch.handlers`: the body of every task, shared by the Celery tasks
  (``worker/tasks/*``) and the inline dispatcher.

Importing this package imports neither Celery nor any service.
"""

from __future__ import annotations

from worker.dispatch.base import Dispatcher

__all__ = ["Dispatcher"]
