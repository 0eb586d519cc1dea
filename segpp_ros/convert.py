"""``python -m segpp_ros.convert``: the same as the ``segpp-convert`` command."""
from segpp_ros.cli.convert import main

if __name__ == "__main__":
    raise SystemExit(main())
