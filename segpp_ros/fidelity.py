"""python -m segpp_ros.fidelity: see segpp_ros.cli.fidelity."""
import sys

from .cli.fidelity import main

if __name__ == "__main__":
    sys.exit(main())
