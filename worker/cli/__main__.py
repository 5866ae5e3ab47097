"""``python -m worker.cli``: the ``facemedia`` command."""

from worker.cli import main

main()
