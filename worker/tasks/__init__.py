"""Thin Celery tasks: ids in, one service call (:mod:`worker.dispatch.handlers`), ids out.

Task names and queues: :mod:`worker.dispatch.names`. Nothing outside the Celery worker imports
these modules; services send tasks through a dispatcher (:mod:`worker.dispatch`).
"""
