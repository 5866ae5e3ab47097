"""The objects layer: where stored objects live, how they are sealed, recorded and deleted.

- :mod:`.layout` — every object key (originals, outputs, research samples, staging, releases,
  audit checkpoints), in one file;
- :mod:`.vault` — the one pairing of crypto and storage (encrypt while storing, decrypt while
  reading), raising this package's errors (:mod:`.errors`), never crypto's or storage's;
- :mod:`.records` — the one "seal, put, record the row with its TTL, audit" helper;
- :mod:`.deleter` — the one deletion path (every version, verified, a receipt each).
- :mod:`.release_cipher` — release objects sealed under a release's own key (both sides).

Services (jobs, research, retention) use these instead of the crypto and storage packages.
Nothing is imported here: ``worker.objects.layout`` stays light enough for the researcher's
side (``research pull``) and the CLI's reads.
"""
