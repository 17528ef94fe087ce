"""``python -m lrpose_bench`` (used by ``torchrun -m lrpose_bench``)."""

from lrpose_bench.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
