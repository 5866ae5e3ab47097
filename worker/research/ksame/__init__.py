"""k-Same staging: a job's aligned face crops wait, encrypted, for a batch of ≥ k subjects.

k-Same-Pixel (``pipelines.deid.operators.k_same``) replaces each face by the average of a cluster
of at least k faces, so it needs several people's faces at once; a job has one person's. At job
time (:class:`~.stager.Stager`) the sampler stores, encrypted under the subject's key as class
``staging`` (key ``staging/{staged_id}``, expiring after ``retention.staging``, 24 h):

* the image with every face already masked (solid ellipse, the same dilation the paste uses), as
  a JPEG, and
* each face's aligned crop (lossless) with its alignment transform and detection,

(:mod:`.material`) and records a :class:`~worker.ledger.models.StagedFace` row. The batch builder
(:class:`~.batcher.KSameBatcher`, task ``facemedia.research.build_ksame_batches``) claims the
staged jobs of at least k distinct subjects (one per subject, oldest first) atomically, runs
k-Same over all their crops, pastes each cluster average back into each member's masked image,
checks each result with :func:`~.gate.k_same_gate`, writes the members' research samples, and
deletes every staged object of the batch (with receipts) and the batch's rows. Fewer than k
eligible subjects: nothing is written and the claim is not taken. A staged object that reaches
its expiry is deleted by the retention sweep; its row is no longer claimable (expired or object
deleted) and is pruned.

**The k-Same gate** (:mod:`.gate`). The residual-face gate fails on any face, and a k-Same output
is a face by design (the cluster average), so it cannot be the check here. ``k_same_gate``
re-detects at the gate's low threshold (0.2) and passes only if every face found lies on a region
that was replaced by a cluster average (IoU ≥ 0.3 with the replaced face's box, or its centre
inside the replaced ellipse's rectangle) — a face found anywhere else is a face that was missed
and left as it was — and the batch had at least k distinct subjects. It fails closed.

Modules: :mod:`.material` (the staged material and its format), :mod:`.gate`, :mod:`.stager`
(job time), :mod:`.batcher` (the batch builder). Nothing is imported here: import the module
you need.
"""
