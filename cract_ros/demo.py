"""Alias kept on purpose: `python -m cract_ros.demo` (the old path of `make demo`) runs cract_ros.tools.demo."""
from cract_ros.tools.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
