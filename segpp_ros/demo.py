"""python -m segpp_ros.demo: see segpp_ros.cli.demo."""
import sys

from .cli.demo import main

if __name__ == "__main__":
    sys.exit(main())
