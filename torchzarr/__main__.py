"""``python -m torchzarr``: the ``torchzarr`` command line (see :mod:`torchzarr.cli`)."""

from torchzarr.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
