"""Alias kept on purpose: `python -m cract_ros.follow_demo` (the old path of `make follow-demo`) runs
cract_ros.follow.demo."""
from cract_ros.follow.demo import main

if __name__ == "__main__":
    raise SystemExit(main())
