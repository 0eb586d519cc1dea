"""python -m segpp_ros.bench: see segpp_ros.cli.bench."""
import sys

from .cli.bench import main

if __name__ == "__main__":
    sys.exit(main())
