"""``python -m pipelines.faces.install_check``: are the face model files installed?

Prints one line per file and exits 0, or prints what is missing and how to install it and exits
1 (``make install`` and the Docker build run it, so a missing model fails the install).
"""

from __future__ import annotations

import sys

from pipelines.faces.models import ModelMissing, check_models


def main() -> int:
    """Check the model files; 0 when all are present, 1 (with the reason on stderr) otherwise."""
    try:
        paths = check_models()
    except ModelMissing as exc:
        print(f"face models: {exc.message}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"face models: ok {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
