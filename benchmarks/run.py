"""Run the benchmark suite without the console script: ``python benchmarks/run.py --out bench``.

The code is in ``camser/bench/`` (see README.md here); this is ``camser bench``."""
import sys

from camser.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", *sys.argv[1:]]))
