"""The HTTP API (issue 17): Starlette on uvicorn, ``facemedia serve``.

An entrypoint like the CLI: it translates HTTP into calls on the container's services
(:class:`worker.jobs.client.JobClient`, :mod:`worker.jobs.reads`,
:class:`worker.retention.rights.SubjectRights`, :class:`worker.ledger.api_keys.ApiKeyStore`) and
their answers back. One module per concern: :mod:`.app` (``create_app``), :mod:`.errors`,
:mod:`.auth`, :mod:`.ratelimit`, :mod:`.upload` (the streaming multipart parser and the bridge
into the sync encryptor), :mod:`.runner` (jobs off the request path on the embedded default),
:mod:`.jobs`, :mod:`.subjects`, :mod:`.health`, :mod:`.openapi`. The contract: docs/API.md.
Nothing heavy is imported here.
"""
