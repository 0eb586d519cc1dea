"""python -m segpp_ros.offline: see segpp_ros.cli.offline."""
import sys

from .cli.offline import main

if __name__ == "__main__":
    sys.exit(main())
